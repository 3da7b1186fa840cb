"""Read-only SQL sources: the query is parsed (exactly one SELECT statement), the connection is
opened read-only where the database supports it, and every transaction is rolled back.

- SQLite: the file is opened through ``file:PATH?mode=ro`` (``uri=True``), so even a statement
  that slipped through cannot write; an in-memory database is left as is.
- PostgreSQL: ``postgresql_readonly`` where the driver supports it, plus ``SET TRANSACTION READ
  ONLY`` as the transaction's first statement.
- MySQL / MariaDB: ``SET SESSION TRANSACTION READ ONLY`` before the transaction.
- Every database: the transaction ends with a rollback, never a commit.

``check_select(query)`` parses with ``sqlparse``: one statement, of type SELECT (``WITH ... SELECT``
allowed), without a data-modifying keyword anywhere (``WITH x AS (DELETE ... RETURNING ...)``,
``SELECT ... INTO``, ``FOR UPDATE``) and without DDL.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from synth_pipeline.errors import IngestError, UnsafeQueryError

if TYPE_CHECKING:
    import pandas as pd

    from synth_pipeline.source import Source

_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_DRIVER_HINTS = {
    "postgresql": "pip install 'psycopg[binary]' (postgresql:// uses psycopg 3), or write postgresql+psycopg2:// "
                  "with psycopg2-binary installed",
    "mysql": "pip install pymysql and use mysql+pymysql://",
    "mssql": "pip install pyodbc",
    "oracle": "pip install oracledb",
}


def redact(uri: str) -> str:
    return re.sub(r"//([^:/@]+):([^@]+)@", r"//\1:***@", uri)


def check_select(query: Any) -> str:
    """Return the query (trailing ``;`` removed) if it is exactly one read-only SELECT statement,
    else raise UnsafeQueryError saying what was found."""
    import sqlparse
    from sqlparse import tokens as T

    if not isinstance(query, str) or not query.strip():
        raise UnsafeQueryError("SQL 'query' is empty; give one SELECT statement (or use 'table')")
    statements = [st for st in sqlparse.parse(query)
                  if any(not (t.is_whitespace or t.ttype in T.Comment or t.ttype is T.Punctuation)
                         for t in st.flatten())]
    if len(statements) != 1:
        raise UnsafeQueryError(
            f"SQL 'query' holds {len(statements)} statements; give exactly one SELECT statement "
            f"(no ';'-separated batches)"
        )
    st = statements[0]
    kind = st.get_type()
    keywords = [(t.ttype, t.normalized.upper()) for t in st.flatten() if t.ttype in T.Keyword]
    dml = [k for tt, k in keywords if tt in T.Keyword.DML and k != "SELECT"]
    ddl = [k for tt, k in keywords if tt in T.Keyword.DDL]
    if kind != "SELECT" or dml or ddl:
        found = kind if kind not in ("SELECT", "UNKNOWN") else (dml or ddl or ["not a SELECT"])[0]
        raise UnsafeQueryError(
            f"SQL 'query' must be one read-only SELECT (or WITH ... SELECT) statement; found {found}. "
            f"Sources are read, never written: move data changes out of the pipeline"
        )
    if any(k == "INTO" for _, k in keywords):
        raise UnsafeQueryError("SQL 'query' uses SELECT ... INTO, which creates a table; remove INTO")
    return str(st).strip().rstrip(";").strip()


def _sqlite_creator(url: Any):
    """A connect function opening the SQLite file read-only (``file:...?mode=ro``, ``uri=True``)."""
    import pathlib
    import sqlite3
    import urllib.parse

    db = url.database
    if not db or db == ":memory:":
        return None
    path = pathlib.Path(db).expanduser().resolve()
    if not path.is_file():
        raise IngestError(f"SQLite database '{path}' does not exist; check the path in the URI (sqlite:///PATH)")
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    return lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)


def _engine(uri: str):
    import sqlalchemy as sa

    try:
        url = sa.engine.make_url(uri)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad URI
        raise IngestError(f"SQL URI '{redact(uri)}' is not a valid SQLAlchemy URI ({type(e).__name__}); "
                          f"e.g. sqlite:///path/to.db or postgresql://user@host/db") from None
    backend = url.get_backend_name()
    kw: dict[str, Any] = {}
    if backend == "sqlite":
        creator = _sqlite_creator(url)
        if creator is not None:
            kw["creator"] = creator
    try:
        return sa.create_engine(url, **kw), backend
    except (ModuleNotFoundError, ImportError, sa.exc.NoSuchModuleError) as e:
        hint = _DRIVER_HINTS.get(backend, "install the SQLAlchemy driver for this database")
        raise IngestError(f"SQL URI '{redact(uri)}': the database driver is not installed "
                          f"({type(e).__name__}: {e}); {hint}") from None
    except Exception as e:  # noqa: BLE001
        raise IngestError(f"SQL URI '{redact(uri)}' is not a valid SQLAlchemy URI: {type(e).__name__}") from None


def _read_only(conn: Any, backend: str) -> None:
    import sqlalchemy as sa

    if backend == "postgresql":
        try:
            conn.execution_options(postgresql_readonly=True)
        except Exception:  # noqa: BLE001 - not every driver supports it; SET TRANSACTION below does
            pass
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
    elif backend in ("mysql", "mariadb"):
        conn.execute(sa.text("SET SESSION TRANSACTION READ ONLY"))


def read_sql(src: Source) -> pd.DataFrame:
    """Read ``src.table`` or ``src.query`` read-only (see module doc); typed IngestError otherwise."""
    import pandas as pd
    import sqlalchemy as sa

    if (src.table is None) == (src.query is None):
        raise IngestError(f"SQL source '{redact(src.path)}' needs exactly one of 'table' or 'query'")
    if src.table is not None and not _SQL_NAME.match(src.table):
        raise IngestError(
            f"SQL table name '{src.table}' is not a plain identifier; use letters, digits and '_' "
            f"(optionally schema.table), or pass a 'query' instead"
        )
    query = check_select(src.query) if src.query is not None else None
    engine, backend = _engine(src.path)
    try:
        with engine.connect() as conn:
            try:
                _read_only(conn, backend)
                if src.table is not None:
                    insp = sa.inspect(conn)
                    schema_name, _, table = src.table.rpartition(".")
                    if table not in insp.get_table_names(schema=schema_name or None):
                        raise IngestError(f"table '{src.table}' does not exist in '{redact(src.path)}'")
                    tbl = sa.Table(table, sa.MetaData(), schema=schema_name or None, autoload_with=conn)
                    df = pd.read_sql(sa.select(tbl), conn)
                else:
                    df = pd.read_sql(sa.text(query), conn)
            finally:
                conn.rollback()
    except IngestError:
        raise
    except sa.exc.SQLAlchemyError as e:
        msg = str(getattr(e, "orig", None) or e).splitlines()[0]
        hint = ""
        if "readonly" in msg.lower().replace(" ", "") or "read-only" in msg.lower():
            hint = "; the source is opened read-only: the query must only read"
        raise IngestError(f"SQL source '{redact(src.path)}' failed: {type(e).__name__}: {msg}{hint}") from None
    except Exception as e:  # pandas wraps driver errors (DatabaseError) for some statements
        raise IngestError(f"SQL source '{redact(src.path)}' failed: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300]}") from None
    finally:
        engine.dispose()
    return df
