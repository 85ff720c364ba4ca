"""``make materialize``'s run is listed by the Dagster UI (issue 14): the run executed in process
gets the origin of its job in ``workspace.yaml`` (orchestration/materialize.py
``with_workspace_origin``), which the UI's Overview timeline needs (it drops a run without a
``repositoryOrigin``). Checked through the UI's own GraphQL API over the real workspace (its
code server started and stopped here)."""

from __future__ import annotations

import dagster as dg
import pytest

from orchestration.materialize import WORKSPACE, with_workspace_origin

RUNS = """
{
  runsOrError {
    ... on Runs {
      results { runId pipelineName repositoryOrigin { repositoryName repositoryLocationName } }
    }
  }
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          ... on RepositoryLocation { repositories { name jobs { name } } }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


@dg.asset
def one() -> int:
    return 1


def run_in_process(instance) -> dg.ExecuteInProcessResult:
    """A materialize_all job of one asset, run as orchestration/materialize.py runs its own."""
    defs = dg.Definitions(assets=[one], jobs=[dg.define_asset_job("materialize_all")])
    result = defs.resolve_job_def("materialize_all").execute_in_process(instance=instance)
    assert instance.get_run_by_id(result.run_id).remote_job_origin is None  # Dagster's default
    return with_workspace_origin(instance, result, defs.get_repository_def().name)


def test_the_in_process_run_gets_the_workspace_origin(tmp_path):
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path)) as instance:
        result = run_in_process(instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        origin = run.remote_job_origin
        assert origin.job_name == "materialize_all"
        assert origin.repository_origin.repository_name == "__repository__"
        assert origin.location_name == "orchestration.definitions:defs"
        label = "__repository__@orchestration.definitions:defs"
        assert run.tags[".dagster/repository"] == label
        assert run.status == dg.DagsterRunStatus.SUCCESS  # the run itself is untouched
        assert [r.run_id for r in instance.get_runs()] == [result.run_id]


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_ui_places_the_run_in_the_workspaces_code_location(tmp_path, monkeypatch):
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    monkeypatch.setenv("SOCIALREC_DATA_DIR", str(tmp_path / "data"))  # the code server's settings
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster")) as instance:
        run_id = run_in_process(instance).run_id
        target = WorkspaceFileTarget(paths=[str(WORKSPACE)])
        with WorkspaceProcessContext(instance, target) as process:  # stops its code server
            answer = execute_dagster_graphql(process.create_request_context(), RUNS)
    assert not answer.errors, answer.errors
    (run,) = answer.data["runsOrError"]["results"]
    assert run["runId"] == run_id and run["pipelineName"] == "materialize_all"
    where = run["repositoryOrigin"]  # None: the Overview's timeline would leave the run out
    entries = answer.data["workspaceOrError"]["locationEntries"]
    (entry,) = [e for e in entries if e["name"] == where["repositoryLocationName"]]
    repos = entry["locationOrLoadError"]["repositories"]
    (repo,) = [r for r in repos if r["name"] == where["repositoryName"]]
    assert "materialize_all" in {j["name"] for j in repo["jobs"]}
