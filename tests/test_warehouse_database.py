"""The collector's warehouse file attached under its own name, with a row group size."""

from __future__ import annotations

import duckdb
import pytest

from spanpipe.warehouse.database import WarehouseDatabase


@pytest.mark.parametrize("name, catalog", [("spans.duckdb", "spans"), ("memory.duckdb", "memory_warehouse"),
                                           ("it's \"odd\".duckdb", "it's \"odd\"")])
def test_every_cursor_reads_the_attached_file_and_nothing_else(tmp_path, name, catalog):
    db = WarehouseDatabase(tmp_path / name, {}, "test", row_group_size=2048)
    db.open()
    try:
        db.writer.execute("INSERT INTO spanpipe_meta VALUES ('written', 'by the writer')")
        reader = db.reader()
        assert reader.execute("SELECT current_database(), value FROM spanpipe_meta WHERE key = 'written'"
                              ).fetchall() == [(catalog, "by the writer")]
        outside = tmp_path / "outside.csv"
        outside.write_text("a\n1\n")
        with pytest.raises(duckdb.Error, match="disabled|Permission"):
            reader.execute(f"SELECT * FROM read_csv('{outside}')").fetchall()
        with pytest.raises(duckdb.Error, match="disabled|Permission"):
            reader.execute(f"ATTACH '{tmp_path / 'other.duckdb'}'")
    finally:
        db.close()
    con = duckdb.connect(str(tmp_path / name), read_only=True)
    assert con.execute("SELECT value FROM spanpipe_meta WHERE key = 'written'").fetchall() == [("by the writer",)]
    con.close()


def test_a_transaction_of_a_whole_row_group_is_stored_in_row_groups_of_that_size(tmp_path):
    db = WarehouseDatabase(tmp_path / "spans.duckdb", {}, "test", row_group_size=4096)
    db.open()
    try:
        db.writer.execute("CREATE TABLE numbers AS SELECT range AS n FROM range(10000)")
        sizes = db.reader().execute("SELECT count FROM pragma_storage_info('numbers') "
                                    "WHERE column_id = 0 GROUP BY row_group_id, count ORDER BY row_group_id").fetchall()
    finally:
        db.close()
    assert [s for (s,) in sizes] == [4096, 4096, 1808]


def test_a_file_written_with_duckdbs_row_groups_keeps_them_and_takes_new_rows_in_the_new_size(tmp_path):
    path = tmp_path / "spans.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE numbers AS SELECT range AS n FROM range(130000)")
    con.close()
    db = WarehouseDatabase(path, {}, "test", row_group_size=4096)
    db.open()
    try:
        db.writer.execute("INSERT INTO numbers SELECT range + 130000 FROM range(8192)")
        reader = db.reader()
        assert reader.execute("SELECT count(*), sum(n) FROM numbers").fetchall() == [(138192, 138191 * 138192 // 2)]
        sizes = [s for (s,) in reader.execute("SELECT count FROM pragma_storage_info('numbers') WHERE column_id = 0 "
                                               "GROUP BY row_group_id, count ORDER BY row_group_id").fetchall()]
    finally:
        db.close()
    assert sizes == [122880, 130000 - 122880, 4096, 4096]
