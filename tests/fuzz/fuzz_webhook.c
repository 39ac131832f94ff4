/*
 * libFuzzer target: pw_webhook_parse (proto/webhook.c, whatsapp.c for Meta Cloud API bodies,
 * aisensy.c for AiSensy project webhooks), on raw payload bytes (what a push's data decodes to).
 *
 * Invariants (abort() on a violation):
 *   - rc is 0, PW_EINVAL, PW_ETOOBIG or PW_EUNSUPP; on failure err is a NUL-terminated reason and
 *     wh is all zero; on success format is META or AISENSY and text is the input;
 *   - every item as docs/rows.md needs it: status and inbound ids non-empty, every present slice
 *     non-empty and readable (ASan: each byte is read), known statuses are the static lower-case
 *     literals, times in range (0 < t <= 9999-12-31T23:59:59.999999Z), contacts with a wa_id or a
 *     user_id and first_seen_at <= seen_at; every JSON text slice (conversation, pricing, errors, payload) is
 *     one strict JSON value of the documented type that PostgreSQL's jsonb accepts: no \u0000 and
 *     no half surrogate pair left (pw_json_validate counts none);
 *   - n_statuses + n_inbound + n_contacts <= PW_WEBHOOK_MAX_ITEMS; reject_reason is "" exactly
 *     when n_rejected == 0;
 *   - reasons (err, reject_reason) are valid UTF-8;
 *   - the result does not depend on the err buffer's size (4 bytes here); dispose is idempotent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/webhook.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_US (PW_TIME_MAX_SECONDS * 1000000LL + 999999)

static volatile unsigned sink;

static void touch(pw_str_t s)
{
    unsigned h = 0;
    if (s.base == NULL) {
        CHECK(s.len == 0);
        return;
    }
    CHECK(s.len > 0);
    for (size_t i = 0; i < s.len; i++)
        h = h * 31 + (unsigned char)s.base[i];
    sink += h;
}

static void required(pw_str_t s)
{
    CHECK(s.base != NULL && s.len > 0);
    touch(s);
}

static void check_time(pw_time_us_t t)
{
    char iso[21], pg[30];
    CHECK(t > 0 && t <= MAX_US);
    pw_time_format_iso_seconds(t, iso);
    pw_time_format_pg(t, pg);
}

static int all_zero(const void *p, size_t n)
{
    const unsigned char *u = p;
    for (size_t i = 0; i < n; i++)
        if (u[i] != 0)
            return 0;
    return 1;
}

static void check_status_literal(pw_str_t s)
{
    static const char *const KNOWN[] = {"sent", "delivered", "read", "failed", "played"};
    for (size_t i = 0; i < 5; i++)
        if (pw_str_eq(s, KNOWN[i]))
            CHECK(s.base == KNOWN[i] || strcmp(s.base, KNOWN[i]) == 0); /* a literal: NUL right after */
}

/* A JSON text slice: absent, or one valid JSON value starting with open, storable by jsonb. */
static void check_json(pw_str_t s, char open)
{
    size_t lossy = 1;
    if (s.base == NULL)
        return;
    CHECK(s.len >= 2 && s.base[0] == open);
    CHECK(pw_json_validate(s.base, s.len, &lossy, NULL, 0) == 0);
    CHECK(lossy == 0);
}

static void check_result(const pw_webhook_t *wh)
{
    CHECK(wh->format == PW_FORMAT_META || wh->format == PW_FORMAT_AISENSY);
    CHECK(wh->text.base != NULL);
    CHECK(wh->n_statuses + wh->n_inbound + wh->n_contacts <= PW_WEBHOOK_MAX_ITEMS);
    CHECK(memchr(wh->reject_reason, '\0', sizeof wh->reject_reason) != NULL);
    CHECK(pw_json_utf8_invalid_at(wh->reject_reason, strlen(wh->reject_reason)) == strlen(wh->reject_reason));
    CHECK((wh->n_rejected == 0) == (wh->reject_reason[0] == '\0'));
    CHECK((wh->statuses == NULL) == (wh->n_statuses == 0));
    CHECK((wh->inbound == NULL) == (wh->n_inbound == 0));
    CHECK((wh->contacts == NULL) == (wh->n_contacts == 0));

    for (size_t i = 0; i < wh->n_statuses; i++) {
        const pw_status_t *s = &wh->statuses[i];
        required(s->id);
        required(s->status);
        check_status_literal(s->status);
        if (wh->format == PW_FORMAT_AISENSY)
            for (size_t k = 0; k < s->status.len; k++)
                CHECK(!(s->status.base[k] >= 'A' && s->status.base[k] <= 'Z'));
        check_time(s->occurred_at);
        touch(s->recipient_id);
        touch(s->recipient_user_id);
        touch(s->phone_number_id);
        touch(s->biz_opaque_callback_data);
        check_json(s->conversation, '{');
        check_json(s->pricing, '{');
        check_json(s->errors, '[');
        CHECK(s->errors.base == NULL || s->errors.len > 2); /* an empty array reads as none */
    }
    for (size_t i = 0; i < wh->n_inbound; i++) {
        const pw_inbound_t *m = &wh->inbound[i];
        required(m->id);
        required(m->type);
        check_time(m->sent_at);
        touch(m->phone_number_id);
        touch(m->from);
        touch(m->from_user_id);
        touch(m->contact_name);
        touch(m->body);
        touch(m->context_id);
        CHECK(m->payload.base != NULL);
        check_json(m->payload, '{');
    }
    for (size_t i = 0; i < wh->n_contacts; i++) {
        const pw_contact_t *c = &wh->contacts[i];
        CHECK(c->wa_id.base != NULL || c->user_id.base != NULL);
        touch(c->wa_id);
        touch(c->user_id);
        touch(c->profile_name);
        touch(c->username);
        touch(c->country_code);
        check_time(c->seen_at);
        check_time(c->first_seen_at);
        CHECK(c->first_seen_at <= c->seen_at);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    pw_webhook_t wh, wh2;
    char err[256], tiny[4];

    memset(err, 0, sizeof err);
    /* A copy of exactly size bytes: ASan then sees any read past the payload. */
    char *copy = malloc(size > 0 ? size : 1);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    body = copy;
    int rc = pw_webhook_parse(body, size, &wh, err, sizeof err);
    CHECK(rc == 0 || rc == PW_EINVAL || rc == PW_ETOOBIG || rc == PW_EUNSUPP);
    if (rc != 0) {
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
        CHECK(pw_json_utf8_invalid_at(err, strlen(err)) == strlen(err));
        CHECK(all_zero(&wh, sizeof wh));
    } else {
        check_result(&wh);
    }

    /* The same verdict and counts with a tiny err buffer. */
    int rc2 = pw_webhook_parse(body, size, &wh2, tiny, sizeof tiny);
    CHECK(rc2 == rc && (rc == 0 || tiny[3] == '\0' || strlen(tiny) < sizeof tiny));
    if (rc == 0) {
        CHECK(wh2.n_statuses == wh.n_statuses && wh2.n_inbound == wh.n_inbound && wh2.n_contacts == wh.n_contacts &&
              wh2.n_rejected == wh.n_rejected && wh2.n_ignored == wh.n_ignored);
        CHECK(strcmp(wh2.reject_reason, wh.reject_reason) == 0);
    }
    pw_webhook_dispose(&wh2);

    pw_webhook_dispose(&wh);
    CHECK(all_zero(&wh, sizeof wh));
    pw_webhook_dispose(&wh);
    free(copy);
    return 0;
}
