/* SPDX-License-Identifier: Apache-2.0 */
/* The mock My Number card's authentication key signs through our crypto module: hal/
 * depends on no other folder, so whoever links both registers the signer. */
#include "kp_card.h"

static int rsa_sign(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *di,
                    size_t di_len, uint8_t *sig, size_t sig_cap, size_t *sig_len)
{
	kp_rsa *k = NULL;
	int rc;

	(void)ctx;
	rc = kp_rsa_parse(&k, key, key_len);
	if (rc == 0)
		rc = kp_rsa_sign_digestinfo(k, di, di_len, sig, sig_cap, sig_len);
	kp_rsa_free(k);
	return rc;
}

void kp_terminal_register_mock_signer(void)
{
	kp_mock_set_rsa_signer(rsa_sign, NULL);
}
