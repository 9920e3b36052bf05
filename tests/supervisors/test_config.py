"""TOML configuration: every section maps onto its policy; unknown keys and bad values name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from runtime import HistoryConfig, MemoryStore, SQLiteStore
from supervisors import Backoff, ReaperPolicy, RestartPolicy, SessionSupervisor
from supervisors._config import Config, ConfigError, MetricsConfig, StoreConfig, load_config, parse_config
from tests.apps.counter import Add, Counter

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sessionvisor.toml"


def parse(text: str) -> Config:
    return parse_config(tomllib.loads(text))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


class TestSections:
    def test_empty_file_is_all_defaults(self) -> None:
        config = parse("")
        assert config == Config()
        assert config.store == StoreConfig(kind="sqlite", path=None, synchronous="FULL")
        assert config.reaper == ReaperPolicy()
        assert config.restarts == RestartPolicy()
        assert config.history == HistoryConfig()
        assert config.metrics == MetricsConfig(enabled=True, host="127.0.0.1", port=9464)
        assert (config.drain_timeout, config.max_concurrent_recoveries) == (5.0, 50)

    def test_store(self) -> None:
        config = parse('[store]\nkind = "sqlite"\npath = "x.db"\nsynchronous = "normal"')
        assert config.store == StoreConfig(kind="sqlite", path="x.db", synchronous="NORMAL")
        assert parse('[store]\nkind = "memory"').store.kind == "memory"

    def test_reaper_every_field(self) -> None:
        config = parse(
            """
            [reaper]
            idle_timeout = 30
            abandon_after = 600.5
            max_age = 7200
            max_messages = 40
            paused_ttl = 120
            terminal_ttl = 60
            retention = 86400
            export_dir = "exports"
            max_sessions = 1000
            on_limit = "evict_idle"
            max_memory_bytes = 100_000_000
            memory_check_interval = 2
            max_starts_per_second = 50
            max_resumes_per_second = 500
            idle_counts_self_sends = true
            """
        )
        assert config.reaper == ReaperPolicy(
            idle_timeout=30,
            abandon_after=600.5,
            max_age=7200,
            max_messages=40,
            paused_ttl=120,
            terminal_ttl=60,
            retention=86400,
            export_dir="exports",
            max_sessions=1000,
            on_limit="evict_idle",
            max_memory_bytes=100_000_000,
            memory_check_interval=2,
            max_starts_per_second=50,
            max_resumes_per_second=500,
            idle_counts_self_sends=True,
        )

    def test_restarts_and_backoff(self) -> None:
        config = parse(
            """
            [restarts]
            max_restarts = 10
            within = 30
            [restarts.backoff]
            initial = 0
            maximum = 1.5
            multiplier = 3
            jitter = 0.5
            """
        )
        assert config.restarts == RestartPolicy(
            max_restarts=10,
            within=30,
            backoff=Backoff(initial=0, maximum=1.5, multiplier=3, jitter=0.5),
        )

    def test_backoff_keeps_its_defaults_for_keys_left_out(self) -> None:
        config = parse("[restarts.backoff]\nmaximum = 2")
        assert config.restarts == RestartPolicy(backoff=Backoff(maximum=2))

    def test_history_metrics_supervisor(self) -> None:
        config = parse(
            """
            [history]
            enabled = false
            max_transitions = 7
            [metrics]
            enabled = false
            host = "::1"
            port = 0
            [supervisor]
            drain_timeout = 0.5
            max_concurrent_recoveries = 4
            """
        )
        assert config.history == HistoryConfig(enabled=False, max_transitions=7)
        assert config.metrics == MetricsConfig(enabled=False, host="::1", port=0)
        assert (config.drain_timeout, config.max_concurrent_recoveries) == (0.5, 4)

    def test_the_example_file_loads(self) -> None:
        config = load_config(EXAMPLE)
        assert config.source == str(EXAMPLE)
        assert config.store.kind == "sqlite"
        assert config.reaper.abandon_after is not None


class TestUnknownKeys:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[reaper]\nidle_timout = 3", "reaper.idle_timout: unknown key (did you mean idle_timeout?)"),
            ("[stor]\nkind = 'memory'", "stor: unknown section (did you mean store?)"),
            ("[restarts]\nmax_restart = 3", "restarts.max_restart: unknown key (did you mean max_restarts?)"),
            ("[restarts.backof]\ninitial = 1", "restarts.backof: unknown key (did you mean backoff?)"),
            (
                "[restarts.backoff]\ninital = 1",
                "restarts.backoff.inital: unknown key (did you mean initial?)",
            ),
            ("[metrics]\nprot = 1", "metrics.prot: unknown key (did you mean port?)"),
            ("[history]\nsize = 1", "history.size: unknown key (known: enabled, max_transitions)"),
            ("[supervisor]\ndrain = 1", "supervisor.drain: unknown key (did you mean drain_timeout?)"),
            ("idle_timeout = 3", "idle_timeout: unknown section"),
        ],
    )
    def test_named_with_a_suggestion(self, text: str, message: str) -> None:
        assert error(text).startswith(message)

    def test_store_path_with_memory(self) -> None:
        assert error('[store]\nkind = "memory"\npath = "x.db"') == (
            'store.path: only applies to kind = "sqlite"'
        )


class TestBadValues:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[reaper]\nidle_timeout = -1", "reaper.idle_timeout: must be > 0, got -1"),
            ("[reaper]\nidle_timeout = 0", "reaper.idle_timeout: must be > 0, got 0"),
            ("[reaper]\nmax_messages = 0", "reaper.max_messages: must be > 0, got 0"),
            ("[reaper]\nmax_age = inf", "reaper.max_age: must be a finite number, got inf"),
            ("[reaper]\non_limit = 'evict'", "reaper.on_limit: must be one of 'reject', 'evict_idle'"),
            ("[restarts]\nmax_restarts = -1", "restarts.max_restarts: must be >= 0, got -1"),
            ("[restarts.backoff]\njitter = -0.1", "restarts.backoff.jitter: must be >= 0, got -0.1"),
            ("[history]\nmax_transitions = 0", "history.max_transitions: must be >= 1, got 0"),
            ("[metrics]\nport = 70000", "metrics.port: must be a port number from 0 to 65535"),
            ("[metrics]\nhost = ''", "metrics.host: must not be empty"),
            ("[supervisor]\ndrain_timeout = -2", "supervisor.drain_timeout: must be >= 0, got -2"),
            (
                "[supervisor]\nmax_concurrent_recoveries = 0",
                "supervisor.max_concurrent_recoveries: must be >= 1",
            ),
            ("[store]\nkind = 'postgres'", "store.kind: must be one of 'sqlite', 'memory', got 'postgres'"),
            ("[store]\nsynchronous = 'OFF'", "store.synchronous: must be one of 'FULL', 'NORMAL', got 'OFF'"),
        ],
    )
    def test_rejected_naming_the_key(self, text: str, message: str) -> None:
        assert error(text).startswith(message)


class TestTypes:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("[reaper]\nidle_timeout = '30'", "reaper.idle_timeout: must be a number, got '30' (str)"),
            ("[reaper]\nidle_timeout = true", "reaper.idle_timeout: must be a number, got True (a boolean)"),
            ("[reaper]\nmax_sessions = 2.5", "reaper.max_sessions: must be an integer, got 2.5 (float)"),
            ("[reaper]\nidle_counts_self_sends = 1", "reaper.idle_counts_self_sends: must be true or false"),
            ("[reaper]\nexport_dir = 3", "reaper.export_dir: must be a string, got 3 (int)"),
            ("[restarts]\nmax_restarts = 1.0", "restarts.max_restarts: must be an integer"),
            ("[restarts]\nbackoff = 1", "restarts.backoff: must be a table ([restarts.backoff]), got 1"),
            ("[history]\nenabled = 'yes'", "history.enabled: must be true or false, got 'yes' (str)"),
            ("[metrics]\nport = '9464'", "metrics.port: must be an integer, got '9464' (str)"),
            ("[store]\npath = 1", "store.path: must be a string, got 1 (int)"),
            ("reaper = 3", "reaper: must be a table ([reaper]), got 3 (int)"),
            ("[reaper.idle_timeout]\nx = 1", "reaper.idle_timeout: must be a number, got {'x': 1} (dict)"),
        ],
    )
    def test_wrong_type_naming_the_key(self, text: str, message: str) -> None:
        assert error(text).startswith(message)

    def test_integers_are_numbers(self) -> None:
        assert parse("[reaper]\nidle_timeout = 3").reaper.idle_timeout == 3

    def test_error_keeps_key_and_problem(self) -> None:
        with pytest.raises(ConfigError) as info:
            parse("[reaper]\nidle_timeout = -1")
        assert info.value.key == "reaper.idle_timeout"
        assert info.value.problem.startswith("must be > 0")
        assert isinstance(info.value, ValueError)


class TestFiles:
    def test_load_names_the_file_in_errors(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_text("[reaper]\nidle_timeout = -1\n")
        with pytest.raises(ConfigError, match=r"bad\.toml: reaper\.idle_timeout: must be > 0") as info:
            load_config(path)
        assert info.value.source == str(path)

    def test_invalid_toml(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.toml"
        path.write_text("[reaper\n")
        with pytest.raises(ConfigError, match="not valid TOML"):
            load_config(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            load_config(tmp_path / "nope.toml")

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"\xff\xfe[store]\n", r"not UTF-8 text \(invalid start byte at byte 0\): save it as UTF-8"),
            (b"# caf\xe9\n[store]\n", r"not UTF-8 text \(invalid continuation byte at byte 5\)"),
            (b"a = " + b"[" * 5000 + b"\n", "not valid TOML: arrays or tables nested too deeply"),
            (b"# " + b"x" * (1024 * 1024), "larger than 1048576 bytes: not a configuration file"),
        ],
        ids=["utf-16", "latin-1", "deep", "huge"],
    )
    def test_not_a_configuration_is_a_config_error_naming_the_file(
        self, tmp_path: Path, content: bytes, message: str
    ) -> None:
        """Never a raw UnicodeDecodeError or RecursionError: a ConfigError with the file's name."""
        path = tmp_path / "odd.toml"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=message) as info:
            load_config(path)
        assert info.value.source == str(path)
        assert str(info.value).startswith(f"{path}: ")

    def test_messages_are_one_line(self, tmp_path: Path) -> None:
        """Control characters in a file name or a value are escaped: the report stays one line."""
        path = tmp_path / "a\nb\x1b[31m.toml"
        path.write_text('[reaper]\non_limit = "x\\ny\\u001b[2J"\n')
        with pytest.raises(ConfigError) as info:
            load_config(path)
        text = str(info.value)
        assert "\n" not in text
        assert "\x1b" not in text
        assert "a\\x0ab\\x1b[31m.toml: reaper.on_limit: must be one of" in text


class TestSessionSupervisor:
    def test_built_as_configured(self, tmp_path: Path) -> None:
        db = tmp_path / "s.db"
        config = parse(
            f"""
            [store]
            path = "{db.as_posix()}"
            synchronous = "NORMAL"
            [reaper]
            idle_timeout = 9
            [restarts]
            max_restarts = 2
            [supervisor]
            drain_timeout = 1.5
            """
        )
        sessions = config.session_supervisor()
        assert isinstance(sessions, SessionSupervisor)
        assert isinstance(sessions.store, SQLiteStore)
        assert sessions.store.path == str(db)
        assert sessions.reaper_policy == ReaperPolicy(idle_timeout=9)
        assert sessions.restart_policy == RestartPolicy(max_restarts=2)
        assert sessions.drain_timeout == 1.5

    def test_overrides_win(self, tmp_path: Path) -> None:
        config = parse("[reaper]\nidle_timeout = 9\n[supervisor]\ndrain_timeout = 1.5")
        store = MemoryStore()
        registry = CollectorRegistry()
        sessions = config.session_supervisor(
            store=store, reaper=ReaperPolicy(max_messages=3), drain_timeout=0.25, registry=registry
        )
        assert sessions.store is store
        assert sessions.registry is registry
        assert sessions.reaper_policy == ReaperPolicy(max_messages=3)
        assert sessions.drain_timeout == 0.25

    def test_one_options_record_built_once_and_handed_down(self) -> None:
        """The file's and the overrides' options reach the host as the record the config built."""
        config = parse(
            "[reaper]\nmax_messages = 7\n[restarts]\nmax_restarts = 2\n[supervisor]\ndrain_timeout = 1.5"
        )
        sessions = config.session_supervisor(store=MemoryStore(), max_concurrent_recoveries=4)
        assert sessions.options == SessionSupervisor.host_options(
            ReaperPolicy(max_messages=7),
            restarts=RestartPolicy(max_restarts=2),
            drain_timeout=1.5,
            max_concurrent_recoveries=4,
            clock=sessions.options.clock,
        )
        assert sessions.options.message_limit == 7
        assert sessions.restart_policy is sessions.options.restarts

    def test_options_refuse_what_they_already_hold(self) -> None:
        options = SessionSupervisor.host_options(ReaperPolicy(), drain_timeout=2.0)
        with pytest.raises(TypeError, match="pass drain_timeout, history in it, not beside it"):
            SessionSupervisor(options=options, drain_timeout=1.0, history=HistoryConfig())
        with pytest.raises(
            ValueError, match=r"options.message_limit is None but the reaper policy asks for 3"
        ):
            SessionSupervisor(options=options, reaper=ReaperPolicy(max_messages=3))
        assert SessionSupervisor(options=options).options is options

    def test_options_refuse_single_options_even_at_their_defaults(self) -> None:
        """``drain_timeout=5.0`` beside ``options=`` is as much a second source as any other value."""
        options = SessionSupervisor.host_options(ReaperPolicy(), drain_timeout=2.0)
        with pytest.raises(TypeError, match="pass drain_timeout, max_concurrent_recoveries in it"):
            SessionSupervisor(options=options, drain_timeout=5.0, max_concurrent_recoveries=50)
        defaults = SessionSupervisor(store=MemoryStore()).options
        assert (defaults.drain_timeout, defaults.max_concurrent_recoveries) == (5.0, 50)

    def test_default_path_when_the_file_names_none(self, tmp_path: Path) -> None:
        sessions = parse("").session_supervisor(default_path=tmp_path / "app.db")
        assert isinstance(sessions.store, SQLiteStore)
        assert sessions.store.path == str(tmp_path / "app.db")

    def test_memory_store(self) -> None:
        sessions = parse('[store]\nkind = "memory"').session_supervisor()
        assert isinstance(sessions.store, MemoryStore)

    @pytest.mark.anyio
    async def test_runs_sessions(self, tmp_path: Path) -> None:
        """A supervisor built from a file starts, records to the configured store and stops."""
        config = parse(f'[store]\npath = "{(tmp_path / "run.db").as_posix()}"\n[reaper]\nmax_messages = 5')
        async with config.session_supervisor(session_types=[Counter]) as sessions:
            c = await sessions.start(Counter, "c")
            assert await c.call(Add(2)) == 2
        assert (tmp_path / "run.db").exists()
