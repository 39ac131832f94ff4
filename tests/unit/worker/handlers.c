/* Unit tests for worker/handlers.c: the statement's array parameters are typed as its SQL casts them, and every
   handler writes each column as that type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "worker/handlers.h"

/* The section named name: its first column and how many it has. */
static int section(const char *name, int *ncols)
{
    const int *ends;
    int n = pw_handlers_sections(&ends);
    for (int i = 0; i < n; i++)
        if (strcmp(pw_handlers_section_name((unsigned)i), name) == 0) {
            int from = i == 0 ? 0 : ends[i - 1];
            *ncols = ends[i] - from;
            return from;
        }
    fail_msg("no section %s", name);
    return -1;
}

static void assert_types(const char *name, const uint32_t *want, int nwant)
{
    int n, from = section(name, &n);
    assert_int_equal(n, nwant);
    const uint32_t *types = pw_handlers_types();
    for (int k = 0; k < n; k++) {
        if (types[from + k] != want[k])
            fail_msg("%s: parameter $%d is of type %u, expected %u", name, k + 1, types[from + k], want[k]);
    }
}

#define T PW_OID_TEXT
#define TS PW_OID_TIMESTAMPTZ
#define J PW_OID_JSONB

static void test_parameters_are_typed_as_the_sql_casts_them(void **state)
{
    (void)state;
    assert_types("receipts", (const uint32_t[]){T, T, TS, T, PW_OID_INT8}, 5);
    assert_types("status", (const uint32_t[]){T, T, TS, T, T, T, J, J, J, T, T, T, T}, 13);
    assert_types("inbound", (const uint32_t[]){T, T, T, T, T, T, T, T, TS, J, T, T}, 12);
    assert_types("contacts", (const uint32_t[]){T, T, T, T, T, TS, TS, T, T}, 9);
    assert_types("dead_letters", (const uint32_t[]){T, T, T, PW_OID_BYTEA}, 4);
    assert_types("redriven", (const uint32_t[]){PW_OID_INT8}, 1);
}

/* Elements in a binary column (pw_db_job_t's format); -1 when the column is not whole elements. */
static int elements(const pw_buf_t *b)
{
    int count = 0;
    size_t at = 0;
    while (at + 4 <= b->len) {
        int32_t len = (int32_t)pw_get_be32(b->base + at);
        at += 4 + (len > 0 ? (size_t)len : 0);
        count++;
    }
    return at == b->len ? count : -1;
}

/*
 * A push with a row for every section, encoded with the statement's types: each handler writes
 * each of its columns as the type the SQL casts it to (cols.c asserts it), one element per row.
 */
static void test_every_section_writes_its_columns_as_their_types(void **state)
{
    (void)state;
    pw_status_t st = {.id = PW_STR_LIT("wamid.1"), .status = PW_STR_LIT("sent"), .occurred_at = 1696329600000000,
                      .recipient_id = PW_STR_LIT("919876543210"), .errors = PW_STR_LIT("[{\"code\":1}]")};
    pw_inbound_t in = {.id = PW_STR_LIT("wamid.2"), .from = PW_STR_LIT("919876543210"), .type = PW_STR_LIT("text"),
                       .sent_at = 1696329600000000, .payload = PW_STR_LIT("{}")};
    pw_contact_t ct = {.wa_id = PW_STR_LIT("919876543210"), .seen_at = 1696329600000000,
                       .first_seen_at = 1696329600000000};
    pw_webhook_t wh = {.statuses = &st, .n_statuses = 1, .inbound = &in, .n_inbound = 1, .contacts = &ct, .n_contacts = 1};
    pw_rows_t v = {.subscription = PW_STR_LIT("projects/p/subscriptions/s"), .message_id = PW_STR_LIT("123"),
                   .publish_time = 1696329600000000, .outcome = "dead_letter", .wh = &wh,
                   .dead_reason = "test", .raw = (const unsigned char *)"{}", .raw_len = 2, .redrive_id = 7};
    int ncols;
    pw_handlers_sql(&ncols);
    const uint32_t *types = pw_handlers_types();
    pw_cols_t c = {0};
    pw_cols_begin(&c, ncols, types);
    pw_handlers_encode(&c, &v);
    for (int k = 0; k < ncols; k++)
        if (elements(&c.col[k]) != 1)
            fail_msg("column %d: %d elements, expected 1", k, elements(&c.col[k]));
    pw_cols_dispose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parameters_are_typed_as_the_sql_casts_them),
        cmocka_unit_test(test_every_section_writes_its_columns_as_their_types),
    };
    return cmocka_run_group_tests_name("worker/handlers", tests, NULL, NULL);
}
