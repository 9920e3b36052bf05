-- A store written by sessionvisor 0.1 (SQLite schema version 2, source f708b3b), dumped with
-- sqlite3's iterdump: the fixture of test_sqlite_store.py::TestMigrations. Never edit it: a
-- later schema gets a file of its own.
PRAGMA page_size = 8192;
PRAGMA application_id = 1398166356;
PRAGMA user_version = 2;
BEGIN TRANSACTION;
CREATE TABLE events (
            position INTEGER PRIMARY KEY,
            session INTEGER NOT NULL,
            version INTEGER NOT NULL,
            type TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            data TEXT NOT NULL,
            recorded_at REAL NOT NULL,
            UNIQUE (session, version)
        );
INSERT INTO "events" VALUES(1,1,1,'Joined',1,'{"player":"ann"}',1.79603779177778339389e+09);
INSERT INTO "events" VALUES(2,1,2,'Joined',1,'{"player":"bob"}',1.79603779177778339389e+09);
INSERT INTO "events" VALUES(3,1,3,'Scored',1,'{"points":3}',1.79603779180529880528e+09);
INSERT INTO "events" VALUES(4,2,1,'Said',1,'{"text":"hi"}',1.79603779181279754641e+09);
CREATE TABLE sessions (
            key INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            status TEXT NOT NULL,
            args TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
INSERT INTO "sessions" VALUES(1,'game-1','Game','running','{"mode":"duel"}','{"channel":"c1"}',1.79603779165465307233e+09,1.79603779165465307233e+09);
INSERT INTO "sessions" VALUES(2,'chat/2','Chat','completed','{}','{}',1.7960377916637237072e+09,1.79603779181279754641e+09);
INSERT INTO "sessions" VALUES(3,'empty','Game','failed','{}','{}',1.79603779168238949777e+09,1.79603779182150197031e+09);
CREATE TABLE snapshots (
            session INTEGER PRIMARY KEY,
            version INTEGER NOT NULL,
            state_version INTEGER NOT NULL,
            data TEXT NOT NULL,
            taken_at REAL NOT NULL
        );
INSERT INTO "snapshots" VALUES(1,2,1,'{"players":["ann","bob"]}',1700000000.5);
CREATE INDEX sessions_by_age ON sessions (created_at, id);
CREATE INDEX sessions_by_status ON sessions (status, created_at, id);
CREATE INDEX sessions_by_type ON sessions (type, created_at, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('sessions',3);
COMMIT;
