/* Schema migrations compiled into the binary, applied in order under an advisory lock. */
#ifndef PW_MIGRATE_H
#define PW_MIGRATE_H

typedef struct {
    const char *name; /* "0001_schema": the file name without .sql */
    const char *sql;
} pw_migration_t;

/* Generated from the files in migrations/ by scripts/embed-sql, in file-name order. */
extern const pw_migration_t pw_migrations[];
extern const unsigned pw_migrations_count;

/**
 * Connects to conninfo (blocking: this runs before serving, or as `worker migrate`), takes a
 * session advisory lock so that instances starting together apply each migration once, applies
 * every migration not yet recorded in schema_migrations, each in its own transaction, and logs
 * what it did. Returns 0, or -1 after logging why.
 */
int pw_migrate_run(const char *conninfo);

#endif
