"""DreamBooth data: a few images of one subject with a fixed prompt, plus optional prior-preservation class images.

The instance images come from a folder of image files or from a built-in offline demo source (animal silhouettes
from the ``animal-mnist`` package); either way they are read into a ``datasets.Dataset`` (column ``image``) by the
shared :class:`~loldu.data.module.SplitDataModule` (everything is training data: there is no split to make).
All input problems (missing folder, no images, undecodable files, prompts too long for the text encoder, missing
prior-preservation settings) are raised by :meth:`DreamBoothDataModule.check`, before any model work. Images are
resized, cropped and flipped by ``torchvision.transforms.v2``, seeded by the module's seed.

Prior preservation needs ``num_class_images`` images of the subject's class in ``class_dir``; the ones missing are
made with :func:`generate_class_images` from the frozen base model before training.
"""

from loldu.data.dreambooth.module import DreamBoothDataModule
from loldu.data.dreambooth.sources import IMAGE_SUFFIXES, generate_class_images, list_images, read_images

__all__ = ["DreamBoothDataModule", "IMAGE_SUFFIXES", "generate_class_images", "list_images", "read_images"]
