"""`cfrec sql` and the DuckDB views over a tiny warehouse written with pandas."""

import json
from datetime import date

import pandas as pd
import pytest

from cfmodel.cli import build_parser, main
from cfmodel.errors import CfrecError
from cfmodel.warehouse import Warehouse, publish
from cfmodel.warehouse.sql import query, render


def write_frame(frame):
    def write(tmp):
        tmp.mkdir()
        frame.to_parquet(tmp / "part-0.parquet", index=False)

    return write


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse.open(tmp_path / "wh")
    publish(wh.table("items"), write_frame(pd.DataFrame({"item_id": ["1", "2"], "title": ["Alpha", "Beta"]})))
    # An older partition written before `source` existed: it must read as null, not break the view.
    publish(
        wh.partition("recommendations", "2026-01-01"),
        write_frame(pd.DataFrame({"user_id": ["u"], "rank": [1], "item_id": ["1"], "score": [4.5]})),
    )
    publish(
        wh.partition("recommendations", "2026-01-02"),
        write_frame(
            pd.DataFrame(
                {
                    "user_id": ["u", "u"],
                    "rank": [1, 2],
                    "item_id": ["2", "1"],
                    "score": [4.0, 3.0],
                    "source": ["model"] * 2,
                }
            )
        ),
    )
    return wh


def test_every_table_is_a_view_with_dated_partitions(warehouse):
    recs = query(warehouse.root, "SELECT * FROM recommendations ORDER BY run_date, rank")
    assert recs["run_date"].tolist() == [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 2)]
    assert recs["source"].tolist()[0] is None and recs["source"].tolist()[1:] == ["model", "model"]
    joined = query(
        warehouse.root,
        "SELECT r.rank, i.title FROM recommendations r JOIN items i USING (item_id) "
        "WHERE run_date = DATE '2026-01-02' ORDER BY rank",
    )
    assert joined.to_dict("list") == {"rank": [1, 2], "title": ["Beta", "Alpha"]}
    assert set(query(warehouse.root, "SHOW TABLES")["name"]) == {"items", "recommendations"}


def test_bad_sql_and_empty_warehouse_are_one_line_errors(warehouse, tmp_path):
    with pytest.raises(CfrecError, match="^Catalog Error: Table with name nowhere does not exist"):
        query(warehouse.root, "SELECT * FROM nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CfrecError, match="has no tables yet"):
        query(tmp_path / "empty", "SELECT 1")
    with pytest.raises(CfrecError, match="does not exist"):
        query(tmp_path / "missing", "SELECT 1")


def test_render_formats():
    frame = pd.DataFrame({"run_date": [date(2026, 1, 2)], "value": [0.5], "gap": [float("nan")]})
    assert render(frame, "csv") == "run_date,value,gap\n2026-01-02,0.5,"
    assert json.loads(render(frame, "json")) == [{"run_date": "2026-01-02", "value": 0.5, "gap": None}]
    assert render(frame, "table").splitlines()[0].split() == ["run_date", "value", "gap"]


def test_cfrec_sql_prints_results_and_errors(warehouse, capsys):
    assert (
        main(["sql", "--warehouse", str(warehouse.root), "--format", "csv", "SELECT title FROM items ORDER BY item_id"])
        == 0
    )
    assert capsys.readouterr().out == "title\nAlpha\nBeta\n"
    assert main(["sql", "--warehouse", str(warehouse.root), "SELEC 1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cfrec sql: error: Parser Error") and err.count("\n") == 1


def test_tables_rejects_a_bad_neighbour_count(tmp_path, capsys):
    assert main(["tables", "--warehouse", str(tmp_path / "wh"), "--similar-k", "0"]) == 2
    assert "--similar-k must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sql", "tables", "score", "train", "run"])
def test_help_explains_every_option(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help, f"cfrec {command} {action.option_strings or action.dest} has no help text"


@pytest.mark.parametrize(
    "sql, message",
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "Cannot access file"),
        ("SELECT * FROM read_parquet('{outside}/*.parquet')", "Cannot access file"),
        ("COPY (SELECT * FROM items) TO '{wh}/items/part-9.parquet'", "a COPY statement is refused"),
        ("ATTACH '{wh}/other.duckdb' AS other", "a ATTACH statement is refused"),
        ("INSTALL httpfs", "statement is refused"),
        ("LOAD httpfs", "statement is refused"),
        ("SET enable_external_access = true", "a SET statement is refused"),
        ("PRAGMA enable_profiling", "statement is refused"),
        ("CREATE TABLE copy AS SELECT * FROM items", "a CREATE statement is refused"),
        ("SELECT 1; SELECT 2", "exactly one statement, got 2"),
        ("SELECT * FROM items; COPY items TO '{wh}/x.csv'", "exactly one statement, got 2"),
    ],
)
def test_cfrec_sql_only_reads_the_warehouse(warehouse, tmp_path, sql, message):
    warehouse = warehouse.root
    outside = tmp_path / "outside"
    outside.mkdir()
    pd.DataFrame({"secret": [1]}).to_parquet(outside / "secret.parquet")
    query(warehouse, "SELECT 1")  # a first reader creates the readers' lock file
    before = sorted(p.relative_to(warehouse) for p in warehouse.rglob("*"))
    with pytest.raises(CfrecError, match=message):
        query(warehouse, sql.format(wh=warehouse, outside=outside))
    assert sorted(p.relative_to(warehouse) for p in warehouse.rglob("*")) == before  # nothing written
    assert query(warehouse, "SELECT count(*) AS n FROM items")["n"][0] == 2  # reading still works


def test_cfrec_sql_reads_files_inside_the_warehouse(warehouse):
    warehouse = warehouse.root
    files = query(warehouse, f"SELECT count(*) AS n FROM read_parquet('{warehouse}/items/*.parquet')")
    assert files["n"][0] == 2
