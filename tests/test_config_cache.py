"""Validated configs kept between runs (config/cache.py): used only when nothing they depend on
changed, never holding a value from the environment, never trusted from a folder others can write,
and never in the way when broken."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.config import cache, load_config
from aggregator.exceptions import ConfigError
from tests.conftest import ROOT

CONFIG = """\
sections: [{id: world, title: World}]
sources:
  - {id: herald, url: 'https://herald.example/rss', section: world, interval: 20m}
"""


def _env(folder: Path, **more: str) -> dict[str, str]:
    return {cache.CACHE_ENV: str(folder), **more}


def _kept(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pickle"))


def test_a_valid_config_is_kept_and_the_next_load_takes_it(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    first = load_config(path, _env(folder), cached=True)
    assert len(_kept(folder)) == 1
    assert folder.stat().st_mode & 0o777 == 0o700
    assert _kept(folder)[0].stat().st_mode & 0o777 == 0o600
    # the kept one is what the next load gives: a marker planted in it shows through
    kept = _kept(folder)[0]
    marked = pickle.loads(kept.read_bytes())
    marked = type(marked)(**{**marked.__dict__, "sections": ()})
    kept.write_bytes(pickle.dumps(marked))
    again = load_config(path, _env(folder), cached=True)
    assert again.sections == () and again.sources == first.sources
    # without `cached`, the file is validated as ever
    assert load_config(path, _env(folder)).sections == first.sections


def test_a_changed_file_is_validated_again(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    assert load_config(path, _env(folder), cached=True).sources[0].interval == timedelta(minutes=20)
    path.write_text(CONFIG.replace("20m", "45m"))
    assert load_config(path, _env(folder), cached=True).sources[0].interval == timedelta(minutes=45)
    path.write_text(CONFIG.replace("20m", "5x"))
    with pytest.raises(ConfigError, match="5x"):
        load_config(path, _env(folder), cached=True)
    assert len(_kept(folder)) == 2  # the broken one is not kept


def test_a_broken_config_is_never_kept_and_reported_every_time(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG.replace("section: world", "section: wrold"))
    for _ in range(2):
        with pytest.raises(ConfigError, match="did you mean 'world'"):
            load_config(path, _env(folder), cached=True)
    assert _kept(folder) == []


def test_a_config_with_values_from_the_environment_is_not_written_to_disk(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG + "smtp: {password: '${SMTP_PASSWORD}'}\n")
    config = load_config(path, _env(folder, SMTP_PASSWORD="hunter2"), cached=True)
    assert config.smtp.password == "hunter2"
    assert _kept(folder) == []
    changed = load_config(path, _env(folder, SMTP_PASSWORD="swordfish"), cached=True)
    assert changed.smtp.password == "swordfish"


def test_what_is_applied_after_validation_applies_to_a_kept_config(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    load_config(path, _env(folder), cached=True)
    url = "sqlite:///elsewhere.db"
    config = load_config(
        path, _env(folder, AGGREGATOR_DATABASE_URL=url), listen=(None, 9999), cached=True
    )
    assert config.storage.url == url
    assert config.server.port == 9999 and config.server.base_url == "http://127.0.0.1:9999/"
    assert config.sources[0].adaptive is False  # defaults filled in, as on a fresh load


@pytest.mark.parametrize("damage", [b"", b"not a pickle", b"\x80\x05garbage"])
def test_a_damaged_kept_config_costs_only_a_validation(tmp_path: Path, damage: bytes) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    fresh = load_config(path, _env(folder), cached=True)
    _kept(folder)[0].write_bytes(damage)
    assert load_config(path, _env(folder), cached=True) == fresh


def test_a_kept_config_others_could_have_written_is_not_loaded(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    load_config(path, _env(folder), cached=True)
    kept = _kept(folder)[0]
    planted = pickle.loads(kept.read_bytes())
    kept.write_bytes(pickle.dumps(type(planted)(**{**planted.__dict__, "sections": ()})))
    kept.chmod(0o666)  # anyone could have put this here
    assert load_config(path, _env(folder), cached=True).sections != ()
    kept.chmod(0o600)
    folder.chmod(0o777)
    try:
        assert load_config(path, _env(folder), cached=True).sections != ()
    finally:
        folder.chmod(0o700)


def test_an_unwritable_folder_or_an_empty_setting_leaves_the_cache_off(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert load_config(path, _env(blocker / "cache"), cached=True).sources  # cannot make it
    assert load_config(path, {cache.CACHE_ENV: ""}, cached=True).sources
    assert cache.folder({cache.CACHE_ENV: ""}) is None
    assert cache.folder({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "aggregator"


def test_only_the_most_recently_used_configs_are_kept(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    for n in range(cache.KEPT + 3):
        path.write_text(CONFIG.replace("20m", f"{20 + n}m"))
        load_config(path, _env(folder), cached=True)
    assert len(_kept(folder)) == cache.KEPT


def test_a_polling_process_never_imports_pydantic_or_the_yaml_reader(tmp_path: Path) -> None:
    """The point of both: the long-running processes do without pydantic's import and
    validators (about 9 MiB at the peak of a first poll of 1,000 sources), and without
    ruamel.yaml's (25 ms). The first load is validated in a child process, which keeps the
    config; the next takes it."""
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    probe = (
        "import sys; from aggregator.config import load_config; "
        f"c = load_config({str(path)!r}, cached=True); "
        "print(len(c.sources), 'pydantic' in sys.modules, 'ruamel.yaml' in sys.modules)"
    )
    env = {**os.environ, cache.CACHE_ENV: str(folder), "PYTHONPATH": str(ROOT)}
    runs = []
    for _ in range(2):
        runs.append(
            subprocess.run(
                [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
        )
        assert len(_kept(folder)) == 1  # kept by the child at the first run
    assert runs == [["1", "False", "False"], ["1", "False", "False"]]


def test_the_child_reports_problems_as_a_validation_here_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG.replace("section: world", "section: wrold").replace("20m", "5x"))
    with pytest.raises(ConfigError) as here:
        load_config(path)
    with pytest.raises(ConfigError) as apart:
        load_config(path, cached=True)  # this process's environment: validated by a child
    assert [str(p) for p in apart.value.problems] == [str(p) for p in here.value.problems]
    assert len(apart.value.problems) == 2
    assert _kept(tmp_path / "cache") == []


def test_the_child_sees_the_environment_and_keeps_nothing_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2")
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG + "smtp: {password: '${SMTP_PASSWORD}'}\n")
    assert load_config(path, cached=True).smtp.password == "hunter2"
    assert _kept(tmp_path / "cache") == []


@pytest.mark.parametrize("interpreter", ["/nonexistent/python", "/bin/false", "", None])
def test_where_no_child_can_validate_this_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interpreter: str | None
) -> None:
    """No interpreter to start, one that fails, or none known (`sys.executable` may be empty
    or None when Python is embedded): the config is validated here, as before."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "executable", interpreter)  # what the child would be started with
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    assert load_config(path, cached=True) == load_config(path)
    assert len(_kept(tmp_path / "cache")) == 1


def test_the_child_imports_nothing_from_the_working_folder(tmp_path: Path) -> None:
    """`python -m` would put the working folder first on the child's path: a `pickle.py` (or an
    `aggregator/` of another version) there must not run."""
    planted = tmp_path / "work"
    planted.mkdir()
    marker = tmp_path / "ran"
    (planted / "pickle.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    probe = f"from aggregator.config import load_config; load_config({str(path)!r}, cached=True)"
    env = {**os.environ, cache.CACHE_ENV: str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-P", "-c", probe], cwd=planted, env=env, check=True)
    assert not marker.exists()
    assert len(_kept(tmp_path / "cache")) == 1  # the child did validate and keep it


def test_a_symlink_is_never_followed_to_a_kept_config(tmp_path: Path) -> None:
    """What is checked is the open folder and file: a symlink in place of either, to a place
    another user could write, proves nothing and is not read."""
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    load_config(path, _env(folder), cached=True)
    kept = _kept(folder)[0]
    planted = pickle.loads(kept.read_bytes())
    elsewhere = tmp_path / "elsewhere.pickle"
    elsewhere.write_bytes(pickle.dumps(type(planted)(**{**planted.__dict__, "sections": ()})))
    elsewhere.chmod(0o600)
    kept.unlink()
    kept.symlink_to(elsewhere)
    assert load_config(path, _env(folder), cached=True).sections != ()
    # a folder that is a symlink to a folder anyone may write to
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / kept.name).write_bytes(elsewhere.read_bytes())
    (shared / kept.name).chmod(0o600)
    linked = tmp_path / "linked"
    linked.symlink_to(shared)
    assert load_config(path, _env(linked), cached=True).sections != ()


def test_a_child_running_other_code_is_not_believed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running service whose project was upgraded on the disk: a child would validate with
    the new code, whose objects this process's classes may not match. It validates itself."""
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_CODE", b"the code as it was when this process started")
    path = tmp_path / "feeds.yaml"
    path.write_text(CONFIG)
    assert load_config(path, cached=True) == load_config(path)
    # the child kept its config under its own code's key, this process under its own
    assert len(_kept(tmp_path / "cache")) == 2


def test_settings_applied_after_validation_are_stripped_as_the_file_is(tmp_path: Path) -> None:
    path, folder = tmp_path / "feeds.yaml", tmp_path / "cache"
    path.write_text(CONFIG)
    env = _env(folder, AGGREGATOR_DATABASE_URL=" sqlite:///x.db\n")
    config = load_config(path, env, listen=(" 0.0.0.0 ", None), cached=True)
    assert config.storage.url == "sqlite:///x.db"
    assert config.server.host == "0.0.0.0"
    assert config.server.base_url == "http://localhost:8080/"


def test_no_home_folder_leaves_the_cache_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user with no passwd entry and no HOME (a container's uid): no cache, no crash."""

    def nowhere() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", nowhere)
    assert cache.folder({}) is None
