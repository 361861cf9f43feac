/* SPDX-License-Identifier: Apache-2.0 */
/* Fixtures of the terminal layer (tests/fixtures.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fixtures.h"
#include "testutil.h"

struct tu_term *tu_term_new(const char *terminal_id, const char *operator_id,
                            uint8_t token_fill)
{
	struct tu_term *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tu_tmpdir(f->dir, sizeof(f->dir));
	snprintf(f->db, sizeof(f->db), "%s/t.db", f->dir);
	memset(f->token_key, token_fill, sizeof(f->token_key));
	assert_int_equal(kp_store_open(&f->s, f->db), KP_OK);
	assert_int_equal(kp_key_generate(&f->key), 0);
	kp_terminal_cfg_defaults(&f->cfg);
	snprintf(f->cfg.terminal_id, sizeof(f->cfg.terminal_id), "%s", terminal_id);
	snprintf(f->cfg.operator_id, sizeof(f->cfg.operator_id), "%s", operator_id);
	return f;
}

void tu_term_engine(struct tu_term *f)
{
	kp_tap_engine_close(f->e);
	f->e = NULL;
	assert_int_equal(kp_tap_engine_open(&f->e, f->s, &f->cfg, f->key, f->token_key), KP_OK);
}

void tu_term_free(struct tu_term *f)
{
	kp_tap_engine_close(f->e);
	kp_store_close(f->s);
	kp_cert_free(f->cert);
	kp_key_free(f->key);
	tu_rmdir(f->dir);
	free(f);
}

int tu_term_teardown(void **state)
{
	tu_term_free(*state);
	return 0;
}

kp_cert *tu_term_cert(struct tu_term *f, const char *cn)
{
	char ca_path[300], cert_path[300];
	kp_cert *ca_cert = NULL, *cert = NULL;
	kp_key *ca = NULL;
	char *pem;

	snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", f->dir);
	snprintf(cert_path, sizeof(cert_path), "%s/t.crt", f->dir);
	assert_int_equal(kp_key_generate(&ca), 0);
	assert_int_equal(kp_cert_create_ca(ca, "test CA", 10, ca_path), 0);
	assert_int_equal(kp_cert_load(&ca_cert, ca_path), 0);
	assert_int_equal(kp_cert_issue(ca, ca_cert, f->key, cn, 10, cert_path), 0);
	assert_int_equal(kp_cert_load(&cert, cert_path), 0);
	pem = tu_read(cert_path);
	assert_non_null(pem);
	assert_int_equal(kp_store_meta_set(f->s, "terminal_cert", pem), KP_OK);
	free(pem);
	kp_cert_free(ca_cert);
	kp_key_free(ca);
	return cert;
}

void tu_term_token(const struct tu_term *f, uint8_t last, uint8_t token[KP_TOKEN_LEN])
{
	uint8_t idm[8] = { 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, last };

	assert_int_equal(kp_token_derive(f->token_key, "felica", idm, 8, token), 0);
}

void tu_term_put_ent(struct tu_term *f, uint8_t card, int64_t id, const char *product,
                     int64_t left, int64_t from, int64_t until)
{
	struct kp_entitlement e;

	memset(&e, 0, sizeof(e));
	tu_term_token(f, card, e.token);
	e.id = id;
	snprintf(e.product, sizeof(e.product), "%s", product);
	e.rides_left = left;
	e.valid_from_ms = from;
	e.valid_until_ms = until;
	assert_int_equal(kp_store_put_entitlement(f->s, &e), KP_OK);
}
