/* Unit tests for worker/dispatch.c's ladder (pw_push_next_rung): which items a refused push keeps, in how many trials. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "worker/dispatch.h"

/* A push of n statuses (counts only: the ladder never reads the items themselves). */
static void fake_push(pw_push_t *p, size_t n_statuses, size_t n_inbound)
{
    memset(p, 0, sizeof *p);
    p->wh.n_statuses = n_statuses;
    p->wh.n_inbound = n_inbound;
    p->outcome = PW_OUTCOME_STORED;
}

static void release(pw_push_t *p)
{
    p->wh.n_statuses = p->wh.n_inbound = 0;
    pw_push_dispose(p);
}

static size_t n_items(const pw_push_t *p)
{
    return p->wh.n_statuses + p->wh.n_inbound + p->wh.n_contacts;
}

static int skipped(const pw_push_t *p, size_t i)
{
    return p->skip != NULL && p->skip[i]; /* items are numbered statuses, then inbound, then contacts */
}

/* Runs the trials as PostgreSQL would answer them when items bad[] are refused; returns how many trials. */
static int run_trials(pw_push_t *p, const unsigned char *bad)
{
    int trials = 0;
    int more = pw_push_next_rung(p, 0, "22023", "refused");
    while (more && p->trial) {
        int refused = 0;
        for (size_t i = 0; i < n_items(p); i++)
            refused |= !skipped(p, i) && bad[i];
        trials++;
        more = pw_push_next_rung(p, !refused, "22023", "refused");
    }
    assert_true(more);
    assert_false(p->trial);
    assert_false(p->skip_dead_letter);
    return trials;
}

static void test_the_refused_items_are_found_and_only_they_are_left_out(void **state)
{
    (void)state;
    pw_push_t p;
    fake_push(&p, 100, 3);
    unsigned char bad[103] = {0};
    bad[17] = bad[101] = 1;
    int trials = run_trials(&p, bad);
    for (size_t i = 0; i < 103; i++)
        assert_int_equal(skipped(&p, i), bad[i]);
    assert_true(trials <= 2 * 2 * 8); /* about 2 log2(n) per refused item */
    assert_non_null(p.dead_reason);
    assert_string_equal(p.dead_reason, "database: 22023: refused (refused statuses[17], messages[1] of 103 item(s); the others are stored)");
    assert_int_equal(p.outcome, PW_OUTCOME_STORED);
    /* Refused again: the fixed reason with the same items, then the raw body alone, then nothing. */
    assert_true(pw_push_next_rung(&p, 0, "23505", "again"));
    assert_string_equal(p.dead_reason, "database refused this push (SQLSTATE 22023); its raw body is kept");
    assert_int_equal(skipped(&p, 17), 1);
    assert_int_equal(skipped(&p, 18), 0);
    assert_true(pw_push_next_rung(&p, 0, "23505", "again"));
    for (size_t i = 0; i < 103; i++)
        assert_int_equal(skipped(&p, i), 1);
    assert_int_equal(p.outcome, PW_OUTCOME_DEAD_LETTER);
    assert_false(pw_push_next_rung(&p, 0, "23505", "again"));
    release(&p);
}

static void test_trials_are_bounded_when_every_item_is_refused(void **state)
{
    (void)state;
    pw_push_t p;
    fake_push(&p, 1000, 0);
    unsigned char *bad = malloc(1000);
    memset(bad, 1, 1000);
    int trials = run_trials(&p, bad);
    assert_true(trials <= 64);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(skipped(&p, i), 1);
    assert_int_equal(p.outcome, PW_OUTCOME_DEAD_LETTER);
    assert_non_null(strstr(p.dead_reason, " and 992 more of 1000 item(s))"));
    free(bad);
    release(&p);
}

static void test_a_push_without_items_goes_to_the_fixed_reason_at_once(void **state)
{
    (void)state;
    pw_push_t p;
    fake_push(&p, 0, 0);
    p.outcome = PW_OUTCOME_DEAD_LETTER;
    assert_true(pw_push_next_rung(&p, 0, "22021", "invalid byte sequence for encoding \"UTF8\""));
    assert_false(p.trial);
    assert_string_equal(p.dead_reason, "database refused this push (SQLSTATE 22021); its raw body is kept");
    assert_true(pw_push_next_rung(&p, 0, "22021", "x"));
    assert_false(pw_push_next_rung(&p, 0, "22021", "x"));
    release(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_refused_items_are_found_and_only_they_are_left_out),
        cmocka_unit_test(test_trials_are_bounded_when_every_item_is_refused),
        cmocka_unit_test(test_a_push_without_items_goes_to_the_fixed_reason_at_once),
    };
    return cmocka_run_group_tests_name("worker/dispatch_ladder", tests, NULL, NULL);
}
