import json
import urllib.request

import pytest
from support import free_port, group_survivors

from cfrec_airflow import server as airflow_server

pytestmark = pytest.mark.slow


def api(url, path, token=None, body=None):
    request = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


def test_local_server_serves_the_dags_and_stops_every_process(tmp_path):
    import time

    home, port = tmp_path / "airflow", free_port()
    info = airflow_server.start(home, port=port, data_dir=tmp_path / "data")
    try:
        assert info["url"] == f"http://127.0.0.1:{port}"
        assert api(info["url"], "/api/v2/monitor/health")["metadatabase"]["status"] == "healthy"
        token = airflow_server.token(info["url"])
        deadline, dag_ids = time.monotonic() + 90, []
        while "cfrec_nightly" not in dag_ids and time.monotonic() < deadline:
            dag_ids = [d["dag_id"] for d in api(info["url"], "/api/v2/dags", token)["dags"]]
            time.sleep(2)
        assert "cfrec_nightly" in dag_ids
        with pytest.raises(Exception, match="already running"):
            airflow_server.start(home, port=port)
    finally:
        result = airflow_server.stop(home)
    assert sorted(result["stopped"]) == sorted(airflow_server.COMPONENTS) and not result["left_running"]
    assert not airflow_server.healthy(port)
    assert group_survivors(result["pids"].values()) == []
    assert airflow_server.stop(home)["stopped"] == []
