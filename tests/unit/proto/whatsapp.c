/* Unit tests for proto/whatsapp.c: Meta Cloud API webhooks, every message type, batching, rejects and skeleton errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "proto/webhook.h"

#define S 1000000LL

static char err[256];
static char json[1 << 16];

/* Fixtures are written with ' for " so they read like JSON; \' is never needed here. */
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

static int parse(const char *body, pw_webhook_t *wh)
{
    err[0] = '\0';
    int rc = pw_webhook_parse(body, strlen(body), wh, err, sizeof(err));
    if (rc != 0)
        print_message("parse failed: %s\n", err);
    return rc;
}

/* A one-change webhook around the given value object. */
static const char *with_value(const char *value)
{
    return q("{'object':'whatsapp_business_account','entry':[{'id':'102290129340398','changes':[{'field':'messages',"
             "'value':{'messaging_product':'whatsapp','metadata':{'display_phone_number':'15550783881',"
             "'phone_number_id':'106540352242922'},%s}}]}]}",
             value);
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

static void test_text_message_with_contact(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(
        parse(with_value("'contacts':[{'profile':{'name':'Kerry Fisher'},'wa_id':'16315551234'}],"
                         "'messages':[{'from':'16315551234','id':'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=',"
                         "'timestamp':'1696329600','text':{'body':'Hello, \\u00e9 \\ud83d\\ude00'},'type':'text'}]"),
              &wh),
        0);
    assert_int_equal(wh.format, PW_FORMAT_META);
    assert_int_equal(wh.n_inbound, 1);
    assert_int_equal(wh.n_statuses, 0);
    assert_int_equal(wh.n_ignored, 0);
    assert_int_equal(wh.n_rejected, 0);
    assert_string_equal(wh.reject_reason, "");
    pw_inbound_t *m = &wh.inbound[0];
    assert_str(m->id, "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=");
    assert_str(m->phone_number_id, "106540352242922");
    assert_str(m->from, "16315551234");
    assert_str(m->from_user_id, NULL);
    assert_str(m->contact_name, "Kerry Fisher");
    assert_str(m->type, "text");
    assert_str(m->body, "Hello, \xc3\xa9 \xf0\x9f\x98\x80");
    assert_str(m->context_id, NULL);
    assert_int_equal(m->sent_at, 1696329600 * S);
    char want_id[256];
    snprintf(want_id, sizeof want_id, "\"%.*s\"", (int)m->id.len, m->id.base);
    assert_string_equal(json_member(m->payload, "id"), want_id);
    assert_int_equal(wh.n_contacts, 1);
    assert_str(wh.contacts[0].wa_id, "16315551234");
    assert_str(wh.contacts[0].profile_name, "Kerry Fisher");
    assert_int_equal(wh.contacts[0].seen_at, 1696329600 * S);
    assert_int_equal(wh.contacts[0].first_seen_at, 1696329600 * S);
    pw_webhook_dispose(&wh);
}

/* One message of the given type; asserts its body (NULL for none). */
static void expect_body(const char *message_fields, const char *want_type, const char *want_body)
{
    pw_webhook_t wh;
    char value[2048];
    snprintf(value, sizeof(value), "'messages':[{'from':'16315551234','id':'wamid.X','timestamp':'1696329600',%s}]",
             message_fields);
    assert_int_equal(parse(with_value(value), &wh), 0);
    if (wh.n_rejected != 0)
        print_error("rejected: %s\n", wh.reject_reason);
    assert_int_equal(wh.n_rejected, 0);
    assert_int_equal(wh.n_inbound, 1);
    assert_str(wh.inbound[0].type, want_type);
    assert_str(wh.inbound[0].body, want_body);
    pw_webhook_dispose(&wh);
}

static void test_body_per_type(void **state)
{
    (void)state;
    expect_body("'type':'text','text':{'body':'hi'}", "text", "hi");
    expect_body("'type':'image','image':{'caption':'a cat','mime_type':'image/jpeg','sha256':'x','id':'1'}", "image", "a cat");
    expect_body("'type':'image','image':{'mime_type':'image/jpeg','sha256':'x','id':'1'}", "image", NULL);
    expect_body("'type':'video','video':{'caption':'clip','id':'2'}", "video", "clip");
    expect_body("'type':'document','document':{'caption':'invoice','filename':'f\\u00e9.pdf','id':'3'}", "document", "invoice");
    expect_body("'type':'audio','audio':{'id':'4','voice':true}", "audio", NULL);
    expect_body("'type':'sticker','sticker':{'id':'5','animated':false}", "sticker", NULL);
    expect_body("'type':'location','location':{'latitude':38.9,'longitude':-77.03,'name':'Main St','address':'1 Main St'}",
                "location", "Main St");
    expect_body("'type':'location','location':{'latitude':38.9,'longitude':-77.03}", "location", NULL);
    expect_body("'type':'contacts','contacts':[{'name':{'formatted_name':'Ann'},'phones':[{'phone':'+1 555'}]}]", "contacts", NULL);
    expect_body("'type':'interactive','interactive':{'type':'button_reply','button_reply':{'id':'b1','title':'Yes'}}",
                "interactive", "Yes");
    expect_body("'type':'interactive','interactive':{'type':'list_reply','list_reply':{'id':'l1','title':'Row 1',"
                "'description':'d'}}",
                "interactive", "Row 1");
    expect_body("'type':'interactive','interactive':{'type':'nfm_reply','nfm_reply':{'name':'flow','body':'Sent',"
                "'response_json':'{\\'a\\':1}'}}",
                "interactive", "Sent");
    expect_body("'type':'interactive'", "interactive", NULL); /* pywa: no sub-object at all */
    expect_body("'type':'button','button':{'payload':'P','text':'Stop promotions'},'context':{'from':'1','id':'wamid.T'}", "button",
                "Stop promotions");
    expect_body("'type':'reaction','reaction':{'message_id':'wamid.R','emoji':'\\ud83d\\udc4d'}", "reaction", "\xf0\x9f\x91\x8d");
    expect_body("'type':'reaction','reaction':{'message_id':'wamid.R'}", "reaction", NULL); /* removed */
    expect_body("'type':'reaction','reaction':{'message_id':'wamid.R','emoji':''}", "reaction", NULL);
    expect_body("'type':'order','order':{'catalog_id':'c','text':'please','product_items':[{'quantity':1}]}", "order", "please");
    expect_body("'type':'system','system':{'body':'User changed number','type':'user_changed_number','wa_id':'2'}", "system",
                "User changed number");
    expect_body("'type':'unsupported','unsupported':{'type':'poll_creation'},'errors':[{'code':131051,"
                "'title':'Message type unknown'}]",
                "unsupported", NULL);
    expect_body("'type':'request_welcome'", "request_welcome", NULL);
    expect_body("'type':'text','text':{'body':42}", "text", NULL); /* a derived field never rejects */
    expect_body("'type':'brand_new_type','brand_new_type':{'body':'x'}", "brand_new_type", NULL);
}

static void test_context_and_referral(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(with_value("'messages':[{'context':{'from':'15550783881','id':'wamid.ORIG'},'from':'1',"
                                      "'id':'wamid.A','timestamp':'1696329600','type':'text','text':{'body':'re'}},"
                                      "{'context':{'forwarded':true},'from':'1','id':'wamid.B','timestamp':1696329601,"
                                      "'type':'image','image':{'id':'9'},'referral':{'source_url':'https://x',"
                                      "'source_type':'ad','ctwa_clid':'c'}}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_inbound, 2);
    assert_str(wh.inbound[0].context_id, "wamid.ORIG");
    assert_str(wh.inbound[1].context_id, NULL);
    assert_int_equal(wh.inbound[1].sent_at, 1696329601 * S); /* a JSON number timestamp */
    assert_string_not_equal(json_member(wh.inbound[1].payload, "referral"), "absent");
    assert_int_equal(wh.n_contacts, 0);
    pw_webhook_dispose(&wh);
}

static void test_username_only_message_without_from(void **state)
{
    pw_webhook_t wh;
    (void)state;
    /* BSUID era: no from, no wa_id; contacts[] has user_id only. */
    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':'Jo'},'user_id':'US.13491208655302741918'}],"
                                      "'messages':[{'from_user_id':'US.13491208655302741918','id':'wamid.U',"
                                      "'timestamp':'1696329600','type':'text','text':{'body':'hey'}}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_rejected, 0);
    assert_int_equal(wh.n_inbound, 1);
    assert_str(wh.inbound[0].from, NULL);
    assert_str(wh.inbound[0].from_user_id, "US.13491208655302741918");
    assert_str(wh.inbound[0].contact_name, "Jo");
    /* known only by user_id: a contact all the same */
    assert_int_equal(wh.n_contacts, 1);
    assert_str(wh.contacts[0].wa_id, NULL);
    assert_str(wh.contacts[0].user_id, "US.13491208655302741918");
    assert_str(wh.contacts[0].profile_name, "Jo");
    assert_str(wh.contacts[0].username, NULL);
    assert_str(wh.contacts[0].country_code, NULL);
    assert_int_equal(wh.contacts[0].seen_at, 1696329600 * S);
    pw_webhook_dispose(&wh);

    /* pywa's user_changed_user_id system message has no from either */
    assert_int_equal(parse(with_value("'messages':[{'id':'wamid.S','timestamp':'1696329600','type':'system',"
                                      "'system':{'body':'changed','type':'user_changed_user_id'}}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_inbound, 1);
    assert_str(wh.inbound[0].from, NULL);
    assert_str(wh.inbound[0].body, "changed");
    pw_webhook_dispose(&wh);
}

/* Meta's "Business-scoped user IDs" page: an incoming text from a user who adopted a username, with
   from and wa_id empty strings; and a delivered status of a message sent to the user's BSUID. */
static void test_business_scoped_user_ids(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':'Sheena Nelson','username':'@realsheenanelson',"
                                      "'country_code':'US'},'wa_id':'','user_id':'US.13491208655302741918'}],"
                                      "'messages':[{'from':'','from_user_id':'US.13491208655302741918','id':'wamid.T',"
                                      "'timestamp':'1749416383','type':'text','text':{'body':'Does it come in another color?'}}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_rejected, 0);
    assert_int_equal(wh.n_inbound, 1);
    assert_str(wh.inbound[0].from, NULL); /* "" reads as absent */
    assert_str(wh.inbound[0].from_user_id, "US.13491208655302741918");
    assert_str(wh.inbound[0].contact_name, "Sheena Nelson");
    assert_int_equal(wh.n_contacts, 1);
    assert_str(wh.contacts[0].wa_id, NULL);
    assert_str(wh.contacts[0].user_id, "US.13491208655302741918");
    assert_str(wh.contacts[0].profile_name, "Sheena Nelson");
    assert_str(wh.contacts[0].username, "@realsheenanelson");
    assert_str(wh.contacts[0].country_code, "US");
    pw_webhook_dispose(&wh);

    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':'Pablo M.','username':'@pablomorales',"
                                      "'country_code':'US'},'wa_id':'','user_id':'user.9373795779eb6441'}],"
                                      "'statuses':[{'id':'wamid.D','status':'delivered','timestamp':'1750030073',"
                                      "'recipient_id':'','recipient_user_id':'user.9373795779eb6441',"
                                      "'pricing':{'billable':true,'pricing_model':'PMP','type':'regular','category':'marketing'}}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_rejected, 0);
    assert_int_equal(wh.n_statuses, 1);
    assert_str(wh.statuses[0].recipient_id, NULL);
    assert_str(wh.statuses[0].recipient_user_id, "user.9373795779eb6441");
    assert_int_equal(wh.n_contacts, 1);
    assert_str(wh.contacts[0].wa_id, NULL);
    assert_str(wh.contacts[0].user_id, "user.9373795779eb6441");
    assert_str(wh.contacts[0].username, "@pablomorales");
    assert_int_equal(wh.contacts[0].seen_at, 1750030073 * S);
    pw_webhook_dispose(&wh);

    /* sent to the phone of a user with a username: both identities in contacts[], no recipient_user_id */
    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':'Pablo M.','username':'@pablomorales',"
                                      "'country_code':'US'},'wa_id':'16505551234','user_id':'user.9373795779eb6441'}],"
                                      "'statuses':[{'id':'wamid.D','status':'delivered','timestamp':'1750030073',"
                                      "'recipient_id':'16505551234'}]"),
                           &wh),
                     0);
    assert_str(wh.statuses[0].recipient_id, "16505551234");
    assert_str(wh.statuses[0].recipient_user_id, NULL);
    assert_str(wh.contacts[0].wa_id, "16505551234");
    assert_str(wh.contacts[0].user_id, "user.9373795779eb6441");
    pw_webhook_dispose(&wh);
}

/* The profile is for convenience (what does not fit is NULL); the identities are stored verbatim (the wrong type rejects). */
static void test_contact_identity_fields(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':7,'username':['x'],'country_code':''},'wa_id':'1',"
                                      "'user_id':'US.1'},{'wa_id':'','user_id':''},{'profile':{'name':'N'}},"
                                      "{'user_id':'US.\\u0032'},{'wa_id':'3','user_id':null}],"
                                      "'statuses':[{'id':'a','status':'sent','timestamp':'1696329600'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_rejected, 0);
    assert_int_equal(wh.n_contacts, 3); /* the entries with neither identity are no sighting */
    assert_str(wh.contacts[0].wa_id, "1");
    assert_str(wh.contacts[0].user_id, "US.1");
    assert_str(wh.contacts[0].profile_name, NULL);
    assert_str(wh.contacts[0].username, NULL);
    assert_str(wh.contacts[0].country_code, NULL);
    assert_str(wh.contacts[1].wa_id, NULL);
    assert_str(wh.contacts[1].user_id, "US.2"); /* unescaped */
    assert_str(wh.contacts[2].wa_id, "3");
    assert_str(wh.contacts[2].user_id, NULL); /* null reads as absent */
    pw_webhook_dispose(&wh);

    assert_int_equal(parse(with_value("'contacts':[{'wa_id':'1','user_id':42},{'wa_id':'2','user_id':'US.2'}],"
                                      "'statuses':[{'id':'a','status':'sent','timestamp':'1696329600'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_rejected, 1);
    assert_string_equal(wh.reject_reason, "entry[0].changes[0].value.contacts[0].user_id: not a string");
    assert_int_equal(wh.n_contacts, 1);
    assert_str(wh.contacts[0].user_id, "US.2");
    pw_webhook_dispose(&wh);
}

/* The sender's name: the entry whose wa_id equals from, else whose user_id equals from_user_id, else the only entry. */
static void test_contact_name_by_user_id(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':'A'},'user_id':'US.A'},{'profile':{'name':'B'},"
                                      "'wa_id':'222','user_id':'US.B'},{'profile':{'name':'C'},'wa_id':'333'}],"
                                      "'messages':[{'from_user_id':'US.B','id':'m1','timestamp':'1696329600','type':'text'},"
                                      "{'from':'333','from_user_id':'US.A','id':'m2','timestamp':'1696329600','type':'text'},"
                                      "{'from':'999','from_user_id':'US.A','id':'m3','timestamp':'1696329600','type':'text'},"
                                      "{'from_user_id':'US.Z','id':'m4','timestamp':'1696329600','type':'text'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_inbound, 4);
    assert_str(wh.inbound[0].contact_name, "B");
    assert_str(wh.inbound[1].contact_name, "C"); /* wa_id first */
    assert_str(wh.inbound[2].contact_name, "A");
    assert_str(wh.inbound[3].contact_name, NULL);
    pw_webhook_dispose(&wh);
}

static void test_contact_name_matching(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':'A'},'wa_id':'111'},{'profile':{'name':'B'},"
                                      "'wa_id':'222'},{'wa_id':'333'}],"
                                      "'messages':[{'from':'222','id':'m1','timestamp':'1696329600','type':'text'},"
                                      "{'from':'999','id':'m2','timestamp':'1696329700','type':'text'},"
                                      "{'from':'333','id':'m3','timestamp':'1696329650','type':'text'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_inbound, 3);
    assert_str(wh.inbound[0].contact_name, "B");
    assert_str(wh.inbound[1].contact_name, NULL); /* no match, and not the only entry */
    assert_str(wh.inbound[2].contact_name, NULL); /* matched, but without a profile name */
    assert_int_equal(wh.n_contacts, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(wh.contacts[i].seen_at, 1696329700 * S);       /* the latest time in the change */
        assert_int_equal(wh.contacts[i].first_seen_at, 1696329600 * S); /* and the earliest */
    }
    assert_str(wh.contacts[0].profile_name, "A");
    assert_str(wh.contacts[2].profile_name, NULL);
    pw_webhook_dispose(&wh);

    /* the only entry is used even when its wa_id differs from from (Meta may format them differently) */
    assert_int_equal(parse(with_value("'contacts':[{'profile':{'name':'Solo'},'wa_id':'16315551234'}],"
                                      "'messages':[{'from':'+16315551234','id':'m1','timestamp':'1696329600','type':'text'}]"),
                           &wh),
                     0);
    assert_str(wh.inbound[0].contact_name, "Solo");
    pw_webhook_dispose(&wh);
}

static void test_statuses_across_entries_and_changes(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(q("{'object':'whatsapp_business_account','entry':["
                             "{'id':'W1','changes':["
                             "{'field':'messages','value':{'metadata':{'phone_number_id':'P1'},'statuses':["
                             "{'id':'wamid.1','status':'sent','timestamp':'1696329600','recipient_id':'16315551234',"
                             "'conversation':{'id':'c1','expiration_timestamp':'1696416000','origin':{'type':'service'}},"
                             "'pricing':{'billable':true,'pricing_model':'PMP','category':'service','type':'regular'}},"
                             "{'id':'wamid.1','status':'delivered','timestamp':1696329660,'recipient_id':'16315551234',"
                             "'biz_opaque_callback_data':'tag-7'}]}},"
                             "{'field':'message_template_status_update','value':{'event':'APPROVED','message_template_id':123}}]},"
                             "{'id':'W2','changes':["
                             "{'field':'messages','value':{'metadata':{'phone_number_id':'P2'},'contacts':[{'wa_id':'447700900123',"
                             "'profile':{'name':'Ann'}}],'statuses':["
                             "{'id':'wamid.2','status':'read','timestamp':'1696329720000','recipient_id':'447700900123'},"
                             "{'id':'wamid.3','status':'failed','timestamp':'1696329780','recipient_id':'447700900124',"
                             "'errors':[{'code':131049,'title':'not delivered to maintain healthy ecosystem engagement'}]},"
                             "{'id':'wamid.4','status':'played','timestamp':'1696329781','errors':[]}]}}]}]}"),
                           &wh),
                     0);
    assert_int_equal(wh.n_statuses, 5);
    assert_int_equal(wh.n_ignored, 1);
    assert_int_equal(wh.n_rejected, 0);
    pw_status_t *s = wh.statuses;
    assert_str(s[0].id, "wamid.1");
    assert_str(s[0].status, "sent");
    assert_int_equal(s[0].occurred_at, 1696329600 * S);
    assert_str(s[0].recipient_id, "16315551234");
    assert_str(s[0].phone_number_id, "P1");
    assert_string_equal(json_member(s[0].conversation, "id"), "\"c1\"");
    assert_string_equal(json_member(s[0].pricing, "pricing_model"), "\"PMP\"");
    assert_str(s[0].errors, NULL);
    assert_str(s[0].biz_opaque_callback_data, NULL);
    assert_str(s[1].status, "delivered");
    assert_int_equal(s[1].occurred_at, 1696329660 * S);
    assert_str(s[1].conversation, NULL);
    assert_str(s[1].pricing, NULL);
    assert_str(s[1].biz_opaque_callback_data, "tag-7");
    assert_str(s[2].status, "read");
    assert_int_equal(s[2].occurred_at, 1696329720 * S); /* milliseconds */
    assert_str(s[2].phone_number_id, "P2");
    assert_str(s[3].status, "failed");
    assert_str(s[3].errors, "[{\"code\":131049,\"title\":\"not delivered to maintain healthy ecosystem engagement\"}]");
    assert_str(s[4].status, "played");
    assert_str(s[4].recipient_id, NULL);
    assert_str(s[4].errors, NULL); /* empty errors[] reads as none */
    /* the contact of the second change is seen at that change's latest status time */
    assert_int_equal(wh.n_contacts, 1);
    assert_str(wh.contacts[0].wa_id, "447700900123");
    assert_int_equal(wh.contacts[0].seen_at, 1696329781 * S);
    assert_int_equal(wh.contacts[0].first_seen_at, 1696329720 * S); /* not the first change's times */
    pw_webhook_dispose(&wh);
}

static void test_unknown_status_kept_exactly(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(with_value("'statuses':[{'id':'a','status':'deleted','timestamp':'1696329600'},"
                                      "{'id':'b','status':'SENT','timestamp':'1696329600'},"
                                      "{'id':'c','status':'Read \\u00e9','timestamp':'1696329600'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_statuses, 3);
    assert_str(wh.statuses[0].status, "deleted");
    assert_str(wh.statuses[1].status, "SENT"); /* Meta's values are lower case: anything else is kept as is */
    assert_str(wh.statuses[2].status, "Read \xc3\xa9");
    pw_webhook_dispose(&wh);
}

static void test_known_status_is_static(void **state)
{
    pw_webhook_t wh;
    pw_str_t kept;
    (void)state;
    assert_int_equal(parse(with_value("'statuses':[{'id':'a','status':'delivered','timestamp':'1696329600'}]"), &wh), 0);
    kept = wh.statuses[0].status;
    pw_webhook_dispose(&wh);
    assert_str(kept, "delivered"); /* still readable after dispose: a static literal */
}

static void test_rejected_items_alongside_good_ones(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(with_value("'contacts':[{'wa_id':'1','profile':{'name':'N'}}],"
                                      "'statuses':[{'id':'ok1','status':'sent','timestamp':'1696329600'},"
                                      "{'status':'sent','timestamp':'1696329600'},"
                                      "{'id':'t','status':'sent','timestamp':'abc'},"
                                      "{'id':12345,'status':'sent','timestamp':'1696329600'},"
                                      "{'id':'ok2','status':'read','timestamp':'1696329900'}],"
                                      "'messages':[{'from':'1','id':'m0','timestamp':'1696329600'},"
                                      "{'from':'1','id':'m1','timestamp':'1696330000','type':'text'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_statuses, 2);
    assert_str(wh.statuses[0].id, "ok1");
    assert_str(wh.statuses[1].id, "ok2");
    assert_int_equal(wh.n_inbound, 1);
    assert_str(wh.inbound[0].id, "m1");
    assert_int_equal(wh.n_rejected, 4);
    assert_string_equal(wh.reject_reason, "entry[0].changes[0].value.statuses[1].id: missing");
    assert_int_equal(wh.n_contacts, 1);
    assert_int_equal(wh.contacts[0].seen_at, 1696330000 * S);
    pw_webhook_dispose(&wh);
}

/* One bad status or message; asserts the recorded reason. */
static void expect_reject(const char *value, const char *want_reason)
{
    pw_webhook_t wh;
    assert_int_equal(parse(with_value(value), &wh), 0);
    assert_int_equal(wh.n_rejected, 1);
    assert_int_equal(wh.n_statuses + wh.n_inbound, 0);
    assert_string_equal(wh.reject_reason, want_reason);
    pw_webhook_dispose(&wh);
}

static void test_reject_reasons(void **state)
{
    (void)state;
#define ST "entry[0].changes[0].value.statuses[0]"
#define MS "entry[0].changes[0].value.messages[0]"
    expect_reject("'statuses':[{'id':'','status':'sent','timestamp':'1696329600'}]", ST ".id: empty");
    expect_reject("'statuses':[{'id':null,'status':'sent','timestamp':'1696329600'}]", ST ".id: missing");
    expect_reject("'statuses':[{'id':7,'status':'sent','timestamp':'1696329600'}]", ST ".id: not a string");
    expect_reject("'statuses':[{'id':'a','timestamp':'1696329600'}]", ST ".status: missing");
    expect_reject("'statuses':[{'id':'a','status':3,'timestamp':'1696329600'}]", ST ".status: not a string");
    expect_reject("'statuses':[{'id':'a','status':'sent'}]", ST ".timestamp: missing");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'abc'}]", ST ".timestamp: not a Unix time: \"abc\"");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'0'}]", ST ".timestamp: time not after 1970-01-01T00:00:00Z");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':-5}]", ST ".timestamp: time not after 1970-01-01T00:00:00Z");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':true}]", ST ".timestamp: not a string or number");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'2023-10-03T10:40:00Z'}]",
                  ST ".timestamp: not a Unix time: \"2023-10-03T10:40:00Z\"");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'1696329600','recipient_id':16315551234}]",
                  ST ".recipient_id: not a string");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'1696329600','recipient_user_id':{}}]",
                  ST ".recipient_user_id: not a string");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'1696329600','errors':{}}]", ST ".errors: not an array");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'1696329600','pricing':'PMP'}]", ST ".pricing: not an object");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'1696329600','conversation':[]}]",
                  ST ".conversation: not an object");
    expect_reject("'statuses':[{'id':'a','status':'sent','timestamp':'1696329600','biz_opaque_callback_data':1}]",
                  ST ".biz_opaque_callback_data: not a string");
    expect_reject("'statuses':['wamid.1']", ST ": not an object");
    expect_reject("'messages':[{'from':'1','timestamp':'1696329600','type':'text'}]", MS ".id: missing");
    expect_reject("'messages':[{'from':'1','id':'m','timestamp':'1696329600'}]", MS ".type: missing");
    expect_reject("'messages':[{'from':'1','id':'m','type':'text'}]", MS ".timestamp: missing");
    expect_reject("'messages':[{'from':16315551234,'id':'m','timestamp':'1696329600','type':'text'}]", MS ".from: not a string");
    expect_reject("'messages':[{'from_user_id':[],'id':'m','timestamp':'1696329600','type':'text'}]",
                  MS ".from_user_id: not a string");
    expect_reject("'messages':[null]", MS ": not an object");
#undef ST
#undef MS
}

static void test_contact_rejects_and_skips(void **state)
{
    pw_webhook_t wh;
    (void)state;
    /* a contact in a change whose items were all rejected has no sighting time: skipped, not rejected */
    assert_int_equal(parse(with_value("'contacts':[{'wa_id':'1'},{'wa_id':2},'x'],"
                                      "'messages':[{'from':'1','id':'m','type':'text'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_contacts, 0);
    assert_int_equal(wh.n_rejected, 3);
    assert_string_equal(wh.reject_reason, "entry[0].changes[0].value.messages[0].timestamp: missing");
    pw_webhook_dispose(&wh);

    assert_int_equal(parse(with_value("'contacts':[{'wa_id':2}],'statuses':[{'id':'a','status':'sent',"
                                      "'timestamp':'1696329600'}]"),
                           &wh),
                     0);
    assert_int_equal(wh.n_contacts, 0);
    assert_int_equal(wh.n_rejected, 1);
    assert_string_equal(wh.reject_reason, "entry[0].changes[0].value.contacts[0].wa_id: not a string");
    pw_webhook_dispose(&wh);
}

static void test_ignored_fields_and_errors(void **state)
{
    pw_webhook_t wh;
    (void)state;
    assert_int_equal(parse(q("{'object':'whatsapp_business_account','entry':[{'id':'W','time':1696329600,'changes':["
                             "{'field':'message_template_status_update','value':{'event':'APPROVED',"
                             "'message_template_id':1,'message_template_name':'t','reason':'NONE'}},"
                             "{'field':'account_update','value':'anything'},"
                             "{'field':'messages','value':{'errors':[{'code':131000,'title':'Something went wrong'}]}}]}]}"),
                           &wh),
                     0);
    assert_int_equal(wh.n_ignored, 3);
    assert_int_equal(wh.n_statuses + wh.n_inbound + wh.n_contacts + wh.n_rejected, 0);
    pw_webhook_dispose(&wh);

    /* an empty webhook is fine: nothing to store */
    assert_int_equal(parse("{\"object\":\"whatsapp_business_account\",\"entry\":[]}", &wh), 0);
    assert_int_equal(wh.format, PW_FORMAT_META);
    assert_int_equal(wh.n_ignored + wh.n_statuses + wh.n_inbound, 0);
    pw_webhook_dispose(&wh);
}

static void expect_skeleton_error(const char *body, const char *want_err)
{
    pw_webhook_t wh;
    static const pw_webhook_t zero;
    err[0] = '\0';
    assert_int_equal(pw_webhook_parse(body, strlen(body), &wh, err, sizeof(err)), PW_EINVAL);
    assert_string_equal(err, want_err);
    assert_memory_equal(&wh, &zero, sizeof(zero));
}

static void test_broken_skeleton(void **state)
{
    (void)state;
    expect_skeleton_error(q("{'object':'whatsapp_business_account'}"), "entry: missing or not an array");
    expect_skeleton_error(q("{'object':'whatsapp_business_account','entry':{'changes':[]}}"), "entry: missing or not an array");
    expect_skeleton_error(q("{'entry':[[]]}"), "entry[0]: not an object");
    expect_skeleton_error(q("{'entry':[{'changes':[]},{'changes':{}}]}"), "entry[1].changes: missing or not an array");
    expect_skeleton_error(q("{'entry':[{'id':'W'}]}"), "entry[0].changes: missing or not an array");
    expect_skeleton_error(q("{'entry':[{'changes':['messages']}]}"), "entry[0].changes[0]: not an object");
    expect_skeleton_error(q("{'entry':[{'changes':[{'value':{}}]}]}"), "entry[0].changes[0].field: missing or not a string");
    expect_skeleton_error(q("{'entry':[{'changes':[{'field':'messages','value':[]}]}]}"),
                          "entry[0].changes[0].value: missing or not an object");
    expect_skeleton_error(q("{'entry':[{'changes':[{'field':'x'},{'field':'messages'}]}]}"),
                          "entry[0].changes[1].value: missing or not an object");
    expect_skeleton_error(q("{'entry':[{'changes':[{'field':'messages','value':{'statuses':{}}}]}]}"),
                          "entry[0].changes[0].value.statuses: not an array");
    expect_skeleton_error(q("{'entry':[{'changes':[{'field':'messages','value':{'messages':'m'}}]}]}"),
                          "entry[0].changes[0].value.messages: not an array");
    expect_skeleton_error(q("{'entry':[{'changes':[{'field':'messages','value':{'contacts':1}}]}]}"),
                          "entry[0].changes[0].value.contacts: not an array");
}

/* statuses:[{},{},...] with n items, split over `changes` changes. */
static char *many_items(size_t n, size_t changes)
{
    size_t cap = n * 3 + changes * 96 + 128, len = 0;
    char *b = malloc(cap);
    len += (size_t)snprintf(b, cap, "{\"entry\":[{\"changes\":[");
    for (size_t c = 0; c < changes; c++) {
        len += (size_t)snprintf(b + len, cap - len, "%s{\"field\":\"messages\",\"value\":{\"statuses\":[", c > 0 ? "," : "");
        for (size_t i = c * n / changes; i < (c + 1) * n / changes; i++)
            len += (size_t)snprintf(b + len, cap - len, "%s{}", i > c * n / changes ? "," : "");
        len += (size_t)snprintf(b + len, cap - len, "]}}");
    }
    snprintf(b + len, cap - len, "]}]}");
    return b;
}

static void test_item_limit(void **state)
{
    pw_webhook_t wh;
    (void)state;
    char *body = many_items(PW_WEBHOOK_MAX_ITEMS + 1, 1);
    assert_int_equal(pw_webhook_parse(body, strlen(body), &wh, err, sizeof(err)), PW_ETOOBIG);
    assert_string_equal(err, "more than 100000 items in one webhook");
    free(body);

    body = many_items(PW_WEBHOOK_MAX_ITEMS + 1, 3); /* counted across changes */
    assert_int_equal(pw_webhook_parse(body, strlen(body), &wh, err, sizeof(err)), PW_ETOOBIG);
    free(body);

    body = many_items(PW_WEBHOOK_MAX_ITEMS, 2); /* at the limit: parsed (every item rejected) */
    assert_int_equal(pw_webhook_parse(body, strlen(body), &wh, err, sizeof(err)), 0);
    assert_int_equal(wh.n_rejected, PW_WEBHOOK_MAX_ITEMS);
    pw_webhook_dispose(&wh);
    free(body);
}

static void test_many_statuses_grow(void **state)
{
    enum { N = 1000 };
    pw_webhook_t wh;
    size_t cap = N * 80 + 256, len = 0;
    char *body = malloc(cap);
    (void)state;
    len += (size_t)snprintf(body, cap, "{\"entry\":[{\"changes\":[{\"field\":\"messages\",\"value\":{\"statuses\":[");
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"id\":\"w%d\",\"status\":\"sent\",\"timestamp\":%d}", i > 0 ? "," : "",
                                i, 1696329600 + i);
    snprintf(body + len, cap - len, "]}}]}]}");
    assert_int_equal(pw_webhook_parse(body, strlen(body), &wh, err, sizeof(err)), 0);
    assert_int_equal(wh.n_statuses, N);
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof(id), "w%d", i);
        assert_str(wh.statuses[i].id, id);
        assert_int_equal(wh.statuses[i].occurred_at, (1696329600LL + i) * S);
    }
    pw_webhook_dispose(&wh);
    free(body);
}

static void test_direct_call(void **state)
{
    pw_webhook_t wh;
    const char *body = "{\"entry\":[{\"changes\":[{\"field\":\"messages\",\"value\":{\"statuses\":"
                       "[{\"id\":\"a\",\"status\":\"sent\",\"timestamp\":\"1696329600\"}]}}]}]}";
    pw_jscan_t sc;
    pw_jval_t root;
    (void)state;
    memset(&wh, 0, sizeof(wh));
    wh.text = pw_str(body, strlen(body));
    pw_jscan_init(&sc, body, strlen(body), PW_JSON_MAX_DEPTH);
    assert_int_equal(pw_jscan_value(&sc, &root), 0);
    assert_int_equal(pw__whatsapp_parse(&wh, &root, err, sizeof(err)), 0);
    assert_int_equal(wh.n_statuses, 1);
    pw_webhook_dispose(&wh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_message_with_contact),
        cmocka_unit_test(test_body_per_type),
        cmocka_unit_test(test_context_and_referral),
        cmocka_unit_test(test_username_only_message_without_from),
        cmocka_unit_test(test_business_scoped_user_ids),
        cmocka_unit_test(test_contact_identity_fields),
        cmocka_unit_test(test_contact_name_by_user_id),
        cmocka_unit_test(test_contact_name_matching),
        cmocka_unit_test(test_statuses_across_entries_and_changes),
        cmocka_unit_test(test_unknown_status_kept_exactly),
        cmocka_unit_test(test_known_status_is_static),
        cmocka_unit_test(test_rejected_items_alongside_good_ones),
        cmocka_unit_test(test_reject_reasons),
        cmocka_unit_test(test_contact_rejects_and_skips),
        cmocka_unit_test(test_ignored_fields_and_errors),
        cmocka_unit_test(test_broken_skeleton),
        cmocka_unit_test(test_item_limit),
        cmocka_unit_test(test_many_statuses_grow),
        cmocka_unit_test(test_direct_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
