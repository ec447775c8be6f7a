"""Write topics.csv: a new user's own data, 21 classes, from the offline ChatterBot corpus.

Each conversation's first turn is a text, its topic file (ai, botprofile, ..., trivia) the label; repeated
(text, topic) pairs are dropped, leaving 751 rows (the largest class, trivia, is 35% of them).

    python experiments/defaults/make_topics_csv.py experiments/defaults/topics.csv
"""

from __future__ import annotations

import csv
import sys

import yaml

from loldu.data.packaged import _chatterbot_files


def main(path: str) -> None:
    rows: dict[tuple[str, str], None] = {}
    for topic, file in _chatterbot_files(None).items():
        for conversation in yaml.safe_load(file.read_text(encoding="utf-8"))["conversations"]:
            if isinstance(conversation, list) and conversation and conversation[0] is not None:
                rows[(str(conversation[0]).strip(), topic)] = None
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "topic"])
        writer.writerows(rows)
    print(f"wrote {path}: {len(rows)} rows, {len({t for _, t in rows})} topics")


if __name__ == "__main__":
    main(sys.argv[1])
