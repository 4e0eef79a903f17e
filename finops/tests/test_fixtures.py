"""The vendored evaluation sets: intact (checksums), licensed and attributed, and small."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def vendored() -> dict[Path, str]:
    lines = (FIXTURES / "SHA256SUMS").read_text().splitlines()
    return {FIXTURES / path: digest for digest, path in (line.split("  ", 1) for line in lines if line)}


def test_every_vendored_file_matches_its_checksum():
    files = vendored()
    assert {p.relative_to(FIXTURES).as_posix().split("/")[0] for p in files} == {"routellm", "nab", "gptcache"}
    for path, digest in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path.relative_to(ROOT)} changed; re-run bench/vendor_eval_data.py"


def test_the_vendored_sets_are_a_few_megabytes_and_compressed():
    files = vendored()
    assert sum(p.stat().st_size for p in files) < 5_000_000
    assert all(p.suffix == ".gz" for p in files if p.name != "combined_windows.json")


def test_each_vendored_set_has_its_licence_and_an_attribution_naming_its_files():
    for folder in {p.relative_to(FIXTURES).parts[0] for p in vendored()}:
        assert (FIXTURES / folder / "LICENSE").is_file(), folder
        readme = (FIXTURES / folder / "README.md").read_text()
        for path in vendored():
            if path.relative_to(FIXTURES).parts[0] == folder:
                assert path.name in readme, f"fixtures/{folder}/README.md does not describe {path.name}"
