"""The read-only role `kaizen sql` reads as (store/roles.py): what PostgreSQL refuses it, that it reads every table
and view (those made later too), and what happens on a server whose owner may not create roles."""

from __future__ import annotations

import logging
import re

import pytest
import sqlalchemy as sa

from tests.support.common import REPO, run_cli


@pytest.fixture
def reader_login(store):
    from store.sql_console import sql_login

    login = sql_login(store)
    assert login.role == "kaizen_reader" and login.read_only and login.notice is None
    return login


@pytest.fixture
def raw_reader(reader_login):
    """A connection as the reader with read-only sessions switched off: what refuses a change here is the
    role's privileges alone."""
    conn = reader_login.connect()
    conn.execute("SET default_transaction_read_only = off")
    yield conn
    conn.close()


def refused(conn, statement: str) -> str:
    import psycopg

    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        return type(exc).__name__
    raise AssertionError(f"the reader was allowed: {statement}")


def test_the_reader_is_a_plain_login_role(store):
    with store.session() as s:
        role = s.execute(sa.text(
            "SELECT rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
            "EXISTS (SELECT 1 FROM pg_auth_members WHERE member = r.oid), rolconfig "
            "FROM pg_roles r WHERE rolname = 'kaizen_reader'")).one()
    assert tuple(role[:8]) == (True, False, False, False, False, False, False, False)
    assert "default_transaction_read_only=on" in role[8]


def test_the_reader_reaches_no_file_program_or_other_role(store, reader_login, raw_reader, tmp_path):
    """Through `kaizen sql` (read-only transaction as well) and through a bare reader session (privileges alone)."""
    from store.sql_console import SqlConsole, SqlError

    marker = tmp_path / "written-by-the-server"
    with store.session() as s:
        large_object = s.execute(sa.text("SELECT lo_from_bytea(0, 'owner only')")).scalar_one()
    statements = [
        f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        "COPY documents FROM PROGRAM 'echo 1'",
        "SELECT pg_read_file('PG_VERSION')",
        "SELECT pg_read_binary_file('PG_VERSION')",
        "SELECT pg_ls_dir('.')",
        "SELECT pg_stat_file('PG_VERSION')",
        f"COPY (SELECT 1) TO '{marker}'",
        "COPY documents FROM '/etc/hostname'",
        "SELECT lo_import('/etc/hostname')",
        f"SELECT lo_export({large_object}, '{marker}')",
        f"SELECT lo_get({large_object})",
        "CREATE EXTENSION IF NOT EXISTS dblink",
        "CREATE SCHEMA reader_probe",
        "SET ROLE postgres",
        "SELECT set_config('role', 'postgres', false)",
        "SET SESSION AUTHORIZATION postgres",
    ]
    try:
        with SqlConsole(reader_login) as console:
            for statement in statements:
                with pytest.raises(SqlError):
                    console.run(statement)
        for statement in statements:
            refused(raw_reader, statement)
        # no extension, no schema: nothing that would reach another database (dblink, postgres_fdw) can be added
        assert raw_reader.execute("SELECT has_database_privilege(current_database(), 'CREATE'), "
                                  "current_user").fetchone() == (False, "kaizen_reader")
    finally:
        with store.session() as s:
            s.execute(sa.text("SELECT lo_unlink(:o)"), {"o": large_object})
    assert not marker.exists()


def test_the_reader_changes_no_row(clean_store, raw_reader):
    from store.sql_console import SqlError, run_sql

    with clean_store.session() as s:
        s.execute(sa.text("INSERT INTO ingest_runs (paths) VALUES ('{x}')"))
    for statement in ["INSERT INTO ingest_runs (paths) VALUES ('{y}')", "UPDATE ingest_runs SET paths = '{z}'",
                      "DELETE FROM ingest_runs", "TRUNCATE ingest_runs", "CREATE TABLE reader_probe (x int)",
                      "ALTER TABLE ingest_runs ADD COLUMN probe int", "DROP VIEW active_chunks",
                      "UPDATE reader_role SET password = 'x'", "SELECT setval('ingest_runs_id_seq', 1000)"]:
        with pytest.raises(SqlError, match="--write"):
            run_sql(clean_store, statement)
        assert refused(raw_reader, statement) == "InsufficientPrivilege", statement
    # Any role may make large objects (and temporary tables) of its own: the reader's read-only sessions refuse
    # them, as they are not Kaizen's data (a psql user who turns read-only off makes them his own, nothing more).
    with pytest.raises(SqlError, match="--write"):
        run_sql(clean_store, "SELECT lo_from_bytea(0, 'x')")
    with clean_store.session() as s:
        assert s.execute(sa.text("SELECT array_agg(paths[1]) FROM ingest_runs")).scalar_one() == ["x"]


def test_every_table_and_view_is_readable_by_the_reader(store, raw_reader):
    documented = re.findall(r"^### (?:table|view) `(\w+)`", (REPO / "docs" / "schema.md").read_text(), re.M)
    with store.session() as s:
        relations = s.execute(sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p')")).scalars().all()
    assert {"documents", "active_chunks", "procrastinate_jobs", "alembic_version"} <= set(relations)
    assert set(documented) <= set(relations) and len(documented) > 20
    for name in sorted(set(relations) | set(documented)):
        raw_reader.execute(f'SELECT * FROM "{name}" LIMIT 1').fetchall()


def test_tables_made_later_are_readable_and_lost_grants_come_back(store, raw_reader):
    """ALTER DEFAULT PRIVILEGES covers what the owner creates after the migrations (the checkpointer does at run
    time); a grant taken away comes back the next time Kaizen opens the database."""
    with store.session() as s:
        s.execute(sa.text("CREATE TABLE later_probe (x int)"))
        s.execute(sa.text("INSERT INTO later_probe VALUES (7)"))
    try:
        assert raw_reader.execute("SELECT x FROM later_probe").fetchall() == [(7,)]
        with store.session() as s:
            s.execute(sa.text("REVOKE SELECT ON later_probe, documents FROM kaizen_reader"))
        assert refused(raw_reader, "SELECT * FROM documents") == "InsufficientPrivilege"
        store.migrate()
        assert raw_reader.execute("SELECT x FROM later_probe").fetchall() == [(7,)]
        raw_reader.execute("SELECT count(*) FROM documents")
    finally:
        with store.session() as s:
            s.execute(sa.text("DROP TABLE later_probe"))


def test_a_superuser_owner_without_a_usable_reader_is_refused(store):
    """Only the embedded server's superuser is left: a read-only transaction would not keep it from files."""
    from store.sql_console import SqlError, sql_login

    with store.session() as s:
        s.execute(sa.text("ALTER ROLE kaizen_reader NOLOGIN"))
    try:
        with pytest.raises(SqlError, match="cannot log in.*--write.*ALTER ROLE"):
            sql_login(store)
        assert sql_login(store, write=True).role == "postgres"
    finally:
        with store.session() as s:
            s.execute(sa.text("ALTER ROLE kaizen_reader LOGIN"))


def test_psql_gets_the_password_outside_its_command_line(reader_login):
    from cli.store_commands import psql_invocation

    argv, env = psql_invocation("psql", reader_login)
    assert reader_login.password and not any(reader_login.password in a for a in argv)
    assert env["PGPASSWORD"] == reader_login.password and "kaizen_reader" in argv[1]
    assert "default_transaction_read_only=on" in env["PGOPTIONS"]


@pytest.mark.slow
def test_kaizen_sql_reads_as_the_reader_and_writes_as_the_owner(store):
    read = run_cli("sql", "SELECT current_user AS who", "--json")
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() and '"kaizen_reader"' in read.stdout and "note" not in read.stderr
    write = run_cli("sql", "--write", "SELECT current_user AS who", "--json")
    assert write.returncode == 0 and '"postgres"' in write.stdout, write.stderr
    denied = run_cli("sql", "SELECT pg_read_file('PG_VERSION')")
    assert denied.returncode == 2 and "permission denied" in denied.stderr and "Traceback" not in denied.stderr


@pytest.mark.slow
def test_an_owner_that_may_not_create_roles_still_migrates(store, tmp_path, caplog):
    """A plain user on a shared server: the migration succeeds and says what a superuser can run; `kaizen sql`
    meanwhile reads as that user in a read-only transaction, with a note; once the role exists it is used."""
    from store.database import Store
    from store.roles import reader_name
    from store.settings import StoreSettings
    from store.sql_console import SqlConsole, SqlError, sql_login

    database, owner, reader = "kaizen_probe", "kaizen_probe_owner", reader_name("kaizen_probe")
    admin = store.engine.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {owner} LOGIN NOSUPERUSER NOCREATEROLE"))
        conn.execute(sa.text(f"CREATE DATABASE {database} OWNER {owner}"))
    admin_there = sa.create_engine(sa.engine.make_url(store.url).set(database=database),
                                   isolation_level="AUTOCOMMIT")
    url = sa.engine.make_url(store.url).set(username=owner, database=database).render_as_string(hide_password=False)
    settings = StoreSettings(home=tmp_path, database_url=url)
    opened = []
    try:
        with admin_there.connect() as conn:  # pgvector is not a trusted extension: a superuser installs it
            conn.execute(sa.text("CREATE EXTENSION vector"))
        with caplog.at_level(logging.WARNING, logger="store.roles"):
            opened.append(Store(settings))
        assert any("may not create roles" in r.getMessage() and "CREATE ROLE" in r.getMessage()
                   for r in caplog.records)
        login = sql_login(opened[-1])
        assert (login.role, login.read_only) == (owner, True)
        assert "may not create roles" in login.notice and "read-only transaction" in login.notice
        with SqlConsole(login) as console:
            assert console.run("SELECT current_user").rows == [(owner,)]
            with pytest.raises(SqlError, match="--write"):
                console.run("DELETE FROM documents")
        create = re.search(r"(CREATE ROLE .*?);", login.notice).group(1)
        with admin_there.connect() as conn:  # what the note tells a superuser to run
            conn.execute(sa.text(create))
        opened.append(Store(settings))  # Kaizen grants the new role read access when it opens the database
        login = sql_login(opened[-1])
        assert (login.role, login.notice) == (reader, None)
        with SqlConsole(login) as console:
            assert console.run("SELECT current_user, count(*) FROM documents").rows == [(reader, 0)]
    finally:
        for s in opened:
            s.close()
        admin_there.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {reader}"))
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {owner}"))
