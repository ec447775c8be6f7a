"""``python -m loldu.report <sweep folder>``: the report of a sweep (:mod:`loldu.sweeps.report`; ``make report``)."""

from loldu.sweeps.report import main

if __name__ == "__main__":
    raise SystemExit(main())
