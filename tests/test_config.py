import pytest

import ddpm_helpers as dh


def test_load_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_MODE", "full")
    assert dh.load_config() is dh.FULL
    monkeypatch.setenv("DDPM_MODE", " Tiny ")
    assert dh.load_config() is dh.TINY
    monkeypatch.delenv("DDPM_MODE")
    assert dh.load_config().mode == "full"  # the default is the book's real run


def test_unknown_mode_names_the_variable():
    with pytest.raises(ValueError, match="DDPM_MODE.*'huge'"):
        dh.load_config("huge")


def test_tiny_and_full_share_every_field_name_and_differ_only_in_values():
    assert dh.TINY.to_dict().keys() == dh.FULL.to_dict().keys()
    assert dh.TINY.mode == "tiny" and dh.FULL.mode == "full"


def test_config_round_trips_through_a_dict():
    assert dh.Config.from_dict(dh.FULL.to_dict()) == dh.FULL
    with pytest.raises(ValueError, match="unknown Config fields"):
        dh.Config.from_dict({**dh.FULL.to_dict(), "colour": "red"})


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="data_source"):
        dh.TINY.replace(data_source="ftp")
    with pytest.raises(ValueError, match="multiple of 8"):
        dh.TINY.replace(channels=12)


def test_seed_everything_returns_a_seeded_generator():
    a = dh.seed_everything(3)
    b = dh.seed_everything(3)
    assert a.initial_seed() == b.initial_seed() == 3
