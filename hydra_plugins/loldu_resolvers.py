"""Registers the OmegaConf resolvers of loldu's configs whenever Hydra starts.

Hydra imports every module of the ``hydra_plugins`` namespace package when it scans for plugins (``@hydra.main``,
``hydra.compose``, the launchers' jobs), so ``conf/`` composes without anything of loldu imported first. This
module defines no plugin class; it only calls :func:`loldu.config.resolvers.register` (torch-free).
"""

from loldu.config.resolvers import register

register()
