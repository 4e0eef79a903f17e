"""The argument-swap set: question pairs that differ only in who does what to whom.

    .venv/bin/python -m evals.cache.heldout_swaps      # rewrites fixtures/cache_swaps/swaps.jsonl.gz

"What is it like for a host to host a CouchSurfer with Asperger's?" and "What is it like for a couchsurfer
to have a host with Asperger's?" sit close in embedding space and share every content word, yet ask different
questions. Each record is {"origin", "swapped", "template", "source"}: the origin is cached, the swapped
prompt is asked, and any hit is a wrong answer. The set is written programmatically from the hand-written
templates and role pairs below (public-domain style question patterns, no copied text), plus the one
role reversal quoted in issue #20; the output is deterministic (sorted, gzip with a zero timestamp).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

SWAPS_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "cache_swaps" / "swaps.jsonl.gz"

# People in asymmetric relations: "a {a} ... a {b}".
PEOPLE = [
    ("host", "guest"), ("landlord", "tenant"), ("teacher", "student"), ("doctor", "patient"), ("employer", "employee"),
    ("parent", "teenager"), ("lawyer", "client"), ("buyer", "seller"), ("manager", "intern"), ("coach", "player"),
    ("nurse", "surgeon"), ("customer", "waiter"), ("author", "editor"), ("therapist", "client"), ("recruiter", "candidate"),
    ("mentor", "mentee"), ("police officer", "suspect"), ("babysitter", "child"), ("contractor", "homeowner"),
    ("journalist", "politician"),
]  # fmt: skip
PEOPLE_TEMPLATES = [
    "What is it like for a {a} to host a {b}?",
    "Can a {a} sue a {b}?",
    "How should a {a} apologize to a {b}?",
    "Why would a {a} lie to a {b}?",
    "Is it normal for a {a} to text a {b} late at night?",
    "What should a {a} do if a {b} stops responding?",
    "How does a {a} evaluate a {b}?",
    "What questions should a {a} ask a {b}?",
    "How can a {a} tell that a {b} is lying?",
    "Is it legal for a {a} to record a {b} without consent?",
    "What is the best way for a {a} to give feedback to a {b}?",
    "How can a {a} earn the respect of a {b}?",
]
# Cause and effect between two quantities.
CAUSES = [
    ("inflation", "unemployment"), ("stress", "sleep"), ("exercise", "mood"), ("debt", "anxiety"),
    ("interest rates", "house prices"), ("social media", "self-esteem"), ("caffeine", "productivity"), ("diet", "acne"),
    ("temperature", "pressure"), ("population growth", "pollution"), ("screen time", "attention span"),
    ("sugar", "hyperactivity"), ("oil prices", "inflation"), ("education", "income"), ("noise", "concentration"),
]  # fmt: skip
CAUSE_TEMPLATES = [
    "How does {a} affect {b}?",
    "Does {a} cause {b}?",
    "Can {a} predict {b}?",
    "What is the impact of {a} on {b}?",
]
# Predators and prey, and other things that act on each other.
ANIMALS = [
    ("cats", "mice"), ("dogs", "cats"), ("lions", "zebras"), ("owls", "snakes"), ("sharks", "seals"), ("wolves", "deer"),
    ("hawks", "rabbits"), ("foxes", "chickens"),
]  # fmt: skip
ANIMAL_TEMPLATES = [
    "Why do {a} chase {b}?",
    "Are {a} afraid of {b}?",
    "How do {a} hunt {b}?",
    "Can {a} smell {b} from far away?",
]
# Conversions and migrations between formats, units and tools (lower case: the entity guard does not see them).
FORMATS = [
    ("json", "yaml"), ("celsius", "fahrenheit"), ("miles", "kilometers"), ("tabs", "spaces"), ("pdf", "word"),
    ("csv", "excel"), ("mp4", "gif"), ("pounds", "kilograms"), ("markdown", "html"), ("rgb", "hex"),
]  # fmt: skip
FORMAT_TEMPLATES = [
    "How do I convert {a} to {b}?",
    "What is the easiest way to turn {a} into {b}?",
    "Should I switch from {a} to {b}?",
]
# The role reversal quoted in issue #20 (a false hit of the semantic cache on held-out traffic).
ISSUE_PAIRS = [
    (
        "What is it like for a couchsurfer to have a host with Asperger's?",
        "What is it like for a host to host a CouchSurfer with Asperger's?",
    ),
]


def build() -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    groups = [
        ("people", PEOPLE, PEOPLE_TEMPLATES),
        ("cause", CAUSES, CAUSE_TEMPLATES),
        ("animals", ANIMALS, ANIMAL_TEMPLATES),
        ("formats", FORMATS, FORMAT_TEMPLATES),
    ]
    for group, pairs, templates in groups:
        for t, template in enumerate(templates):
            for a, b in pairs:
                rows.append(
                    {
                        "origin": template.format(a=a, b=b),
                        "swapped": template.format(a=b, b=a),
                        "template": f"{group}-{t}",
                        "source": "template",
                    }
                )
    for origin, swapped in ISSUE_PAIRS:
        rows.append({"origin": origin, "swapped": swapped, "template": "issue-20", "source": "issue #20"})
    return rows


def load_swaps(path: Path = SWAPS_PATH) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write(path: Path = SWAPS_PATH) -> int:
    rows = build()
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0, filename="") as fh:
        fh.write(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())
    return len(rows)


if __name__ == "__main__":
    import sys

    sys.stdout.write(f"wrote {write()} swap pairs to {SWAPS_PATH}\n")
