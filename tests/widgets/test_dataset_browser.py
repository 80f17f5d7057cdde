import pytest

from vsm_kit.data import SOURCES
from widgets import DatasetBrowser


@pytest.fixture
def browser(demo_world):
    return DatasetBrowser(demo_world.dataset)


def test_every_source_renders(browser):
    seen = set()
    for name in SOURCES:
        browser.select(name)
        assert browser.last_record is not None and browser.last_record.source == name
        png = bytes(browser.image.value)
        assert png.startswith(b"\x89PNG")
        seen.add(png)
    assert len(seen) == len(SOURCES)


def test_dropdown_change_changes_picture(browser):
    before = bytes(browser.image.value)
    browser.source.value = "refclef"  # as a click in the dropdown does
    assert browser.last_record.source == "refclef" and bytes(browser.image.value) != before


def test_slider_random_and_toggles(browser):
    browser.select("cocostuff")
    first = bytes(browser.image.value)
    browser.index.value = 3
    assert browser.last_record.index == 3 and bytes(browser.image.value) != first
    shown = bytes(browser.image.value)
    browser.masks.value = False
    assert bytes(browser.image.value) != shown
    positions = set()
    for _ in range(6):
        browser.random_button.click()
        positions.add(browser.index.value)
    assert len(positions) > 1


def test_filter_keeps_matching_records(browser):
    browser.select("refcocog")
    browser.set_filter("next to")
    assert browser.matches and all(
        any("next to" in t for t in browser.current[i].texts) for i in browser.matches
    )
    browser.filter.value = "zzz nothing"
    assert browser.matches == [] and "no record matches" in browser.status.value


def test_unreadable_image_shows_a_message(world_copy):
    b = DatasetBrowser(world_copy, sources=["objects365"])
    victim = b.current[0].image_path
    victim.write_bytes(b"garbage")
    b.show(1)
    b.show(0)
    assert "Cannot decode image" in b.status.value and victim.name in b.status.value


def test_missing_source_files_show_a_message(world_copy):
    (world_copy / "refer_seg/refclef/instances.json").unlink()
    b = DatasetBrowser(world_copy, sources=["objects365", "refclef"])
    b.select("refclef")
    assert "Missing" in b.status.value and "instances.json" in b.status.value
