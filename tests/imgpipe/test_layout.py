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


def test_dvc_root_names_the_project_of_a_copy_wherever_the_copy_lies(tmp_path, monkeypatch):
    from imgpipe.layout import DVC_ROOT_VARIABLE, local_path, original_project

    project = tmp_path / "project"
    (project / "photos").mkdir(parents=True)  # git-ignored, so absent from the copy
    elsewhere = tmp_path / "scratch" / "exp-copy"  # a copy DVC made outside the project
    elsewhere.mkdir(parents=True)
    monkeypatch.setenv(DVC_ROOT_VARIABLE, str(project))
    assert original_project(elsewhere) == project.resolve()
    assert original_project(project) is None  # `dvc repro` in the project itself
    assert original_project(project / "photos") is None
    monkeypatch.chdir(elsewhere)
    assert local_path("photos") == project.resolve() / "photos"
    (tmp_path / "beside").mkdir()  # a folder next to the project: ../beside
    assert local_path("../beside") == project.resolve() / "../beside"
