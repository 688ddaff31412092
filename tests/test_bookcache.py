"""The book cache's key and calls (issue 23), without building anything: the key follows every file
of the package, and a keyword argument a library function does not take fails loudly."""
from __future__ import annotations

import shutil

import pytest

from iaiabl_lib import bookcache


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package for bookcache to hash (edited by the tests, never the real one)."""
    copy = tmp_path / "iaiabl_lib"
    shutil.copytree(bookcache.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(bookcache, "PACKAGE", copy)
    return copy


def test_the_key_covers_every_python_file_and_the_shipped_weights():
    sources = set(bookcache.package_sources())
    py = {p.relative_to(bookcache.PACKAGE).as_posix() for p in bookcache.PACKAGE.rglob("*.py")
          if "__pycache__" not in p.parts and p.relative_to(bookcache.PACKAGE).parts[0] not in bookcache.NOT_INPUTS}
    assert py and py <= sources
    assert {"data/locate.py", "evaluate/protocol.py", "eq9.py", "pretrained/tiny_synthetic.pt"} <= sources


@pytest.mark.parametrize("edited", ["data/locate.py", "evaluate/protocol.py", "explain/health.py",
                                    "pretrained/tiny_synthetic.pt"])
def test_editing_any_library_file_changes_the_key(package_copy, edited):
    params = {"kind": "iaiabl", "seed": 0}
    before = bookcache._key(params, bookcache.package_sources())
    with open(package_copy / edited, "ab") as f:
        f.write(b"\n# edited\n")
    assert bookcache._key(params, bookcache.package_sources()) != before


def test_recorded_results_do_not_change_the_key(package_copy):
    params = {"kind": "iaiabl", "seed": 0}
    before = bookcache._key(params, bookcache.package_sources())
    (package_copy / "science_runs").mkdir(exist_ok=True)
    (package_copy / "science_runs" / "new_record.json").write_text("{}")
    assert bookcache._key(params, bookcache.package_sources()) == before


def test_an_unknown_keyword_argument_fails_loudly():
    def make(out_dir, seed=0):
        return out_dir, seed

    assert bookcache._call(make, "x", seed=1) == ("x", 1)
    with pytest.raises(TypeError, match="takes no keyword argument 'confounder'"):
        bookcache._call(make, "x", seed=1, confounder=0.9)
    assert bookcache._call(lambda *a, **k: k, confounder=0.9) == {"confounder": 0.9}


def test_a_chapters_run_time_counts_what_it_built_for_the_cache(tmp_path):
    """bookcache.glue_run_time: the whole time since the clock started, and the part spent building
    cache entries (a second call finds the entry and builds nothing)."""
    import time

    def build(path):
        time.sleep(0.2)
        path.mkdir()

    clock = bookcache.start_clock()
    bookcache._build_once(tmp_path / "entry-abc", build, {"what": "test"})
    first = bookcache.glue_run_time(clock)
    assert set(first) == set(bookcache.RUN_TIME_KEYS)
    assert first["chapter_building_seconds"] >= 0.2
    assert first["chapter_seconds"] >= first["chapter_building_seconds"]
    again = bookcache.start_clock()
    bookcache._build_once(tmp_path / "entry-abc", build, {"what": "test"})
    assert bookcache.glue_run_time(again)["chapter_building_seconds"] == 0.0
    assert "CPU" in first["chapter_machine"]
