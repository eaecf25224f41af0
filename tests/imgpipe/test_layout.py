from dataclasses import fields
from pathlib import Path

from imgpipe import layout
from imgpipe.layout import Layout, find_project


def test_under_moves_every_path_below_the_root_and_keeps_the_contract_names(tmp_path):
    moved = Layout.under(tmp_path)
    for field in fields(Layout):
        default = getattr(Layout(), field.name)
        assert not default.is_absolute()
        assert getattr(moved, field.name) == tmp_path / default
    assert Layout().prepared == Path(layout.PREPARED) and Layout().model == Path(layout.MODEL)


def test_the_project_is_found_from_a_sub_folder_and_not_outside_one(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    deep = tmp_path / "photos" / "holiday"
    deep.mkdir(parents=True)
    assert find_project(deep) == tmp_path.resolve()
    assert find_project(tmp_path) == tmp_path.resolve()
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    assert find_project(outside) is None or find_project(outside) != tmp_path.resolve()


def test_an_experiment_copy_reads_what_only_the_original_project_holds(tmp_path, monkeypatch):
    from imgpipe.layout import local_path, original_project

    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "run" / "tmpab12"
    copy.mkdir(parents=True)
    (project / "photos" / "cat").mkdir(parents=True)  # git-ignored, so absent from the copy
    (copy / "params.yaml").write_text("{}\n")
    assert original_project(copy) == project.resolve()
    assert original_project(project) is None
    monkeypatch.chdir(copy)
    assert local_path("photos") == project.resolve() / "photos"
    assert local_path("params.yaml") == Path("params.yaml")  # what the copy has, it keeps
    assert local_path("missing") == Path("missing")  # the stage then says it is missing
    monkeypatch.chdir(project)
    assert local_path("photos") == Path("photos")
