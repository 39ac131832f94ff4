/* Unit tests for proto/aisensy.c: AiSensy project webhooks mapped onto the Meta-shaped items. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/webhook.h"

#define S 1000000LL
#define T0 1727951400LL /* 2024-10-03T10:30:00Z */

static char err[256];
static char json[8192];

/* Fixtures use ' for " so they read like JSON. */
static const char *q(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(json, sizeof(json), fmt, ap);
    va_end(ap);
    for (char *p = json; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    return json;
}

/* An envelope with the given topic, created_at (JSON text) and data.message members. */
static const char *envelope(const char *topic, const char *created_at, const char *message)
{
    return q("{'id':'notif-1','created_at':%s,'topic':'%s','delivery_attempt':'1','app_id':'a','project_id':'p',"
             "'data':{'message':{'type':'message','id':'ais-1','messageId':'wamid.AIS=',%s}}}",
             created_at, topic, message);
}

static int parse(const char *body, pw_webhook_t *wh)
{
    err[0] = '\0';
    int rc = pw_webhook_parse(body, strlen(body), wh, err, sizeof(err));
    if (rc != 0)
        print_message("parse failed: %s\n", err);
    return rc;
}

/* Member key of the JSON text js (a slice of the payload), as compact JSON text, for assertions;
   "absent" when it has none. json-c reads it here only to inspect what the parser kept. */
static const char *json_member(pw_str_t js, const char *key)
{
    static char out[1024];
    char *z = malloc(js.len + 1);
    memcpy(z, js.base, js.len);
    z[js.len] = '\0';
    json_object *o = json_tokener_parse(z), *v;
    free(z);
    if (o == NULL || !json_object_object_get_ex(o, key, &v))
        snprintf(out, sizeof out, "absent");
    else
        snprintf(out, sizeof out, "%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return out;
}

static void assert_str(pw_str_t s, const char *want)
{
    if (want == NULL) {
        if (s.base != NULL)
            print_error("expected NULL, got \"%.*s\"\n", (int)s.len, s.base);
        assert_null(s.base);
        return;
    }
    if (s.base == NULL)
        print_error("expected \"%s\", got NULL\n", want);
    assert_non_null(s.base);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.base, want, s.len);
}

static void test_inbound_text(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(envelope("message.sender.user", "'2024-10-03T10:30:05.123Z'",
                                    "'phone_number':'9876543210','countryCode':'+91','contact_id':'c1','sender':'USER',"
                                    "'message_type':'TEXT','message_content':{'text':'Namaste'},'userName':'Asha',"
                                    "'sent_at':1727951400000"),
                           &wh),
                     0);
    assert_int_equal(wh.format, PW_FORMAT_AISENSY);
    assert_int_equal(wh.n_inbound, 1);
    assert_int_equal(wh.n_statuses, 0);
    assert_int_equal(wh.n_rejected, 0);
    pw_inbound_t *m = &wh.inbound[0];
    assert_str(m->id, "wamid.AIS=");
    assert_str(m->from, "919876543210");
    assert_str(m->type, "text");
    assert_str(m->body, "Namaste");
    assert_str(m->contact_name, "Asha");
    assert_str(m->phone_number_id, NULL);
    assert_str(m->context_id, NULL);
    assert_int_equal(m->sent_at, T0 * S); /* sent_at in ms wins over created_at */
    assert_string_equal(json_member(m->payload, "id"), "\"ais-1\"");
    assert_int_equal(wh.n_contacts, 1);
    assert_str(wh.contacts[0].wa_id, "919876543210");
    assert_str(wh.contacts[0].profile_name, "Asha");
    assert_int_equal(wh.contacts[0].seen_at, T0 * S);
    assert_int_equal(wh.contacts[0].first_seen_at, T0 * S);
    pw_webhook_dispose(&wh);
}

static void test_inbound_time_fallbacks(void **state)
{
    pw_webhook_t wh;
    (void)state;
    /* no sent_at: the envelope's created_at, here an ISO string (observed) */
    assert_int_equal(
        parse(envelope("message.sender.user", "'2024-10-03T10:30:05.123Z'", "'phone_number':'1','message_type':'TEXT'"), &wh), 0);
    assert_int_equal(wh.inbound[0].sent_at, (T0 + 5) * S + 123000);
    pw_webhook_dispose(&wh);
    /* placeholders are absent: "0", 0, "", {} */
    const char *placeholders[] = {"'0'", "0", "''", "{}", "null"};
    for (size_t i = 0; i < sizeof(placeholders) / sizeof(placeholders[0]); i++) {
        char msg[128];
        snprintf(msg, sizeof(msg), "'message_type':'TEXT','sent_at':%s", placeholders[i]);
        assert_int_equal(parse(envelope("message.sender.user", "1727951400000", msg), &wh), 0);
        assert_int_equal(wh.n_rejected, 0);
        assert_int_equal(wh.inbound[0].sent_at, T0 * S); /* created_at in ms (documented) */
        assert_int_equal(wh.n_contacts, 0);              /* no phone number: no contact */
        pw_webhook_dispose(&wh);
    }
    /* seconds, numeric strings */
    assert_int_equal(parse(envelope("message.sender.user", "0", "'message_type':'TEXT','sent_at':'1727951400'"), &wh), 0);
    assert_int_equal(wh.inbound[0].sent_at, T0 * S);
    pw_webhook_dispose(&wh);
    assert_int_equal(parse(envelope("message.sender.user", "0", "'message_type':'TEXT','sent_at':1727951400"), &wh), 0);
    assert_int_equal(wh.inbound[0].sent_at, T0 * S);
    pw_webhook_dispose(&wh);
    assert_int_equal(parse(envelope("message.sender.user", "0", "'message_type':'TEXT','sent_at':'1727951400500'"), &wh), 0);
    assert_int_equal(wh.inbound[0].sent_at, T0 * S + 500000);
    pw_webhook_dispose(&wh);
}

static void test_type_mapping(void **state)
{
    static const struct {
        const char *aisensy, *meta;
    } CASES[] = {
        {"TEXT", "text"},
        {"IMAGE", "image"},
        {"VIDEO", "video"},
        {"AUDIO", "audio"},
        {"FILE", "document"},
        {"DOCUMENT", "document"},
        {"STICKER", "sticker"},
        {"LOCATION", "location"},
        {"CONTACT", "contacts"},
        {"QUICK_REPLY", "button"},
        {"INTERACTIVE", "interactive"},
        {"REACTION", "reaction"},
        {"Button_Reply", "button_reply"},
        {"ORDER", "order"},
        {"text", "text"},
    };
    pw_webhook_t wh;
    (void)state;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        char msg[128];
        snprintf(msg, sizeof(msg), "'message_type':'%s','sent_at':1727951400000", CASES[i].aisensy);
        assert_int_equal(parse(envelope("message.sender.user", "0", msg), &wh), 0);
        assert_str(wh.inbound[0].type, CASES[i].meta);
        pw_webhook_dispose(&wh);
    }
}

static void test_body_sources(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(envelope("message.sender.user", "1727951400000",
                                    "'message_type':'IMAGE','message_content':{'url':'https://cdn/x.jpg',"
                                    "'mimeType':'image/jpeg','caption':'look'}"),
                           &wh),
                     0);
    assert_str(wh.inbound[0].body, "look");
    pw_webhook_dispose(&wh);
    assert_int_equal(parse(envelope("message.sender.user", "1727951400000",
                                    "'message_type':'QUICK_REPLY','message_content':{'text':'','title':'Yes'}"),
                           &wh),
                     0);
    assert_str(wh.inbound[0].body, "Yes");
    pw_webhook_dispose(&wh);
    assert_int_equal(parse(envelope("message.sender.user", "1727951400000",
                                    "'message_type':'AUDIO','message_content':{'url':'https://cdn/a.ogg'}"),
                           &wh),
                     0);
    assert_str(wh.inbound[0].body, NULL);
    pw_webhook_dispose(&wh);
}

static void test_phone_and_country_code(void **state)
{
    static const struct {
        const char *fields, *want;
    } CASES[] = {
        {"'phone_number':'919876543210','countryCode':'91'", "919876543210"}, /* already prefixed */
        {"'phone_number':'9876543210','countryCode':91", "919876543210"},     /* a number */
        {"'phone_number':'+919876543210','countryCode':'91'", "+919876543210"},
        {"'phone_number':'+14155550100','countryCode':'91'", "+14155550100"}, /* '+': already international */
        {"'phone_number':'9876543210'", "9876543210"},
        {"'phone_number':'9876543210','countryCode':''", "9876543210"},
        {"'phone_number':'9876543210','countryCode':'0'", "9876543210"},
        {"'phone_number':'','countryCode':'91'", NULL},
    };
    pw_webhook_t wh;
    (void)state;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        char msg[256];
        snprintf(msg, sizeof(msg), "'message_type':'TEXT',%s", CASES[i].fields);
        assert_int_equal(parse(envelope("message.sender.user", "1727951400000", msg), &wh), 0);
        assert_str(wh.inbound[0].from, CASES[i].want);
        pw_webhook_dispose(&wh);
    }
}

static void test_status_uppercase_and_ms(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(envelope("message.status.updated", "1727951460000",
                                    "'phone_number':'9876543210','countryCode':'91','status':'DELIVERED',"
                                    "'sent_at':1727951400000,'delivered_at':1727951430000,'read_at':0,"
                                    "'failed_at':'0','failureResponse':{}"),
                           &wh),
                     0);
    assert_int_equal(wh.n_statuses, 1);
    assert_int_equal(wh.n_inbound + wh.n_contacts + wh.n_rejected + wh.n_ignored, 0);
    pw_status_t *s = &wh.statuses[0];
    assert_str(s->id, "wamid.AIS=");
    assert_str(s->status, "delivered");
    assert_int_equal(s->occurred_at, (T0 + 30) * S); /* delivered_at, not sent_at or created_at */
    assert_str(s->recipient_id, "919876543210");
    assert_str(s->errors, NULL);
    assert_str(s->conversation, NULL);
    assert_str(s->pricing, NULL);
    assert_str(s->phone_number_id, NULL);
    pw_webhook_dispose(&wh);
}

static void test_status_time_forms(void **state)
{
    static const struct {
        const char *fields;
        pw_time_us_t want;
    } CASES[] = {
        {"'status':'READ','read_at':1727951430", (T0 + 30) * S},      /* seconds */
        {"'status':'READ','read_at':'1727951430000'", (T0 + 30) * S}, /* numeric string, ms */
        {"'status':'READ','read_at':'2024-10-03T10:30:30.250Z'", (T0 + 30) * S + 250000},
        {"'status':'READ','read_at':'0'", T0 * S}, /* placeholder: created_at */
        {"'status':'SENT'", T0 * S},               /* 11:30:00+01:00 = 10:30:00Z */
        {"'status':'Sent','sent_at':1727951401000", (T0 + 1) * S},
    };
    pw_webhook_t wh;
    (void)state;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        assert_int_equal(parse(envelope("message.status.updated", "'2024-10-03T11:30:00+01:00'", CASES[i].fields), &wh), 0);
        if (wh.n_rejected != 0)
            print_error("case %zu rejected: %s\n", i, wh.reject_reason);
        assert_int_equal(wh.n_statuses, 1);
        assert_int_equal(wh.statuses[0].occurred_at, CASES[i].want);
        pw_webhook_dispose(&wh);
    }
}

static void test_status_failed(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(envelope("message.status.updated", "1727951460000",
                                    "'status':'FAILED','failed_at':1727951410000,"
                                    "'failureResponse':{'code':131047,'reason':'Re-engagement message'}"),
                           &wh),
                     0);
    pw_status_t *s = &wh.statuses[0];
    assert_str(s->status, "failed");
    assert_int_equal(s->occurred_at, (T0 + 10) * S);
    assert_str(s->errors, "[{\"code\":131047,\"reason\":\"Re-engagement message\"}]"); /* the object's own text */
    pw_webhook_dispose(&wh);

    /* {} is a placeholder, not a failure detail; and a failureResponse on a non-failed status is ignored */
    assert_int_equal(parse(envelope("message.status.updated", "1727951460000", "'status':'FAILED','failureResponse':{}"), &wh), 0);
    assert_str(wh.statuses[0].errors, NULL);
    assert_int_equal(wh.statuses[0].occurred_at, (T0 + 60) * S);
    pw_webhook_dispose(&wh);
    assert_int_equal(
        parse(envelope("message.status.updated", "1727951460000", "'status':'SENT','failureResponse':{'code':1}"), &wh), 0);
    assert_str(wh.statuses[0].errors, NULL);
    pw_webhook_dispose(&wh);
}

static void test_status_unknown_lower_cased(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(
        parse(envelope("message.status.updated", "1727951460000", "'status':'DELETED','deleted_at':1727951405000"), &wh), 0);
    assert_str(wh.statuses[0].status, "deleted");
    assert_int_equal(wh.statuses[0].occurred_at, (T0 + 5) * S);
    pw_webhook_dispose(&wh);
}

static void test_other_topics_ignored(void **state)
{
    pw_webhook_t wh;
    (void)state;
    const char *topics[] = {"message.created", "contact.created", "payment.captured", ""};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        assert_int_equal(parse(envelope(topics[i], "1727951460000", "'message_type':'TEXT'"), &wh), 0);
        assert_int_equal(wh.format, PW_FORMAT_AISENSY);
        assert_int_equal(wh.n_ignored, 1);
        assert_int_equal(wh.n_inbound + wh.n_statuses + wh.n_contacts + wh.n_rejected, 0);
        pw_webhook_dispose(&wh);
    }
    /* an ignored topic does not care about the shape of data */
    assert_int_equal(parse(q("{'topic':'contact.tag.updated','data':{'contact':{'id':'c'}}}"), &wh), 0);
    assert_int_equal(wh.n_ignored, 1);
    pw_webhook_dispose(&wh);
}

static void expect_reject(const char *topic, const char *created_at, const char *message, const char *want)
{
    pw_webhook_t wh;
    assert_int_equal(parse(envelope(topic, created_at, message), &wh), 0);
    assert_int_equal(wh.n_rejected, 1);
    assert_int_equal(wh.n_inbound + wh.n_statuses + wh.n_contacts, 0);
    assert_string_equal(wh.reject_reason, want);
    pw_webhook_dispose(&wh);
}

static void test_rejected_items(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(q("{'topic':'message.sender.user','created_at':1727951460000,"
                             "'data':{'message':{'message_type':'TEXT'}}}"),
                           &wh),
                     0);
    assert_int_equal(wh.n_rejected, 1);
    assert_string_equal(wh.reject_reason, "data.message.messageId: missing");
    pw_webhook_dispose(&wh);

    expect_reject("message.sender.user", "1727951460000", "'sent_at':1727951400000", "data.message.message_type: missing");
    expect_reject("message.sender.user", "0", "'message_type':'TEXT'", "data.message.sent_at: missing, and no created_at");
    expect_reject("message.sender.user", "1727951460000", "'message_type':'TEXT','sent_at':'yesterday'",
                  "data.message.sent_at: not a time (not an RFC 3339 time: \"yesterday\")");
    expect_reject("message.sender.user", "'soon'", "'message_type':'TEXT'",
                  "created_at: not a time (not an RFC 3339 time: \"soon\")");
    expect_reject("message.sender.user", "1727951460000", "'message_type':'TEXT','phone_number':919876543210",
                  "data.message.phone_number: not a string");
    expect_reject("message.sender.user", "1727951460000", "'message_type':5", "data.message.message_type: not a string");
    expect_reject("message.status.updated", "1727951460000", "'status':''", "data.message.status: empty");
    expect_reject("message.status.updated", "1727951460000", "'status':'READ','read_at':true",
                  "data.message.read_at: not a time (not a string or number)");
    expect_reject("message.status.updated", "1727951460000", "'status':'READ','read_at':-1",
                  "data.message.read_at: not a time (time not after 1970-01-01T00:00:00Z)");
}

static void test_broken_skeleton(void **state)
{
    pw_webhook_t wh;
    static const pw_webhook_t zero;
    const char *bodies[] = {
        "{\"topic\":\"message.sender.user\",\"data\":{}}",
        "{\"topic\":\"message.status.updated\",\"data\":{\"message\":[]}}",
        "{\"topic\":\"message.status.updated\",\"data\":{\"message\":null}}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        assert_int_equal(pw_webhook_parse(bodies[i], strlen(bodies[i]), &wh, err, sizeof(err)), PW_EINVAL);
        assert_string_equal(err, "data.message: missing or not an object");
        assert_memory_equal(&wh, &zero, sizeof(zero));
    }
    /* data not an object: not AiSensy's shape at all */
    assert_int_equal(pw_webhook_parse("{\"topic\":\"message.sender.user\",\"data\":[]}", 41, &wh, err, sizeof(err)), PW_EUNSUPP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inbound_text),
        cmocka_unit_test(test_inbound_time_fallbacks),
        cmocka_unit_test(test_type_mapping),
        cmocka_unit_test(test_body_sources),
        cmocka_unit_test(test_phone_and_country_code),
        cmocka_unit_test(test_status_uppercase_and_ms),
        cmocka_unit_test(test_status_time_forms),
        cmocka_unit_test(test_status_failed),
        cmocka_unit_test(test_status_unknown_lower_cased),
        cmocka_unit_test(test_other_topics_ignored),
        cmocka_unit_test(test_rejected_items),
        cmocka_unit_test(test_broken_skeleton),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
