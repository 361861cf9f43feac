/* SPDX-License-Identifier: Apache-2.0 */
/* A card's replies as the terminal reads them: kp_card_identify over a reader whose every
 * transceive answers with the next piece of the input (fuzz_next), as a FeliCa transit card
 * (poll, balance) or a My Number card (SELECT, READ BINARY of the certificate, then the
 * PIN counter, VERIFY and COMPUTE DIGITAL SIGNATURE replies). The first byte picks the
 * card and the flags. The certificate a card returns goes through the JPKI checks against
 * a fixed CA. */
#include "fuzzutil.h"
#include "kp_card.h"
#include "kp_cert.h"
#include "kp_hal.h"

#include <string.h>

struct fuzz_reader {
	struct kp_reader base;
	struct fuzz_split in;
};

static int fr_transceive(struct kp_reader *r, const uint8_t *tx, size_t tx_len, uint8_t *rx,
                         size_t rx_cap, size_t *rx_len, int timeout_ms)
{
	struct fuzz_reader *f = (struct fuzz_reader *)r;
	const uint8_t *p;
	size_t n;

	if (!fuzz_next(&f->in, &p, &n))
		return KP_HAL_E_NOCARD;
	if (n == 0)
		return KP_HAL_E_TIMEOUT;
	if (n > rx_cap)
		return KP_HAL_E_OVERFLOW;
	memcpy(rx, p, n);
	*rx_len = n;
	return KP_HAL_OK;
}

static int fr_now(struct kp_reader *r, int64_t *ms)
{
	*ms = 1800000000000;             /* a fixed clock */
	return KP_HAL_OK;
}

static const struct kp_reader_ops fuzz_ops = {
	.scheme = "fuzz",
	.transceive = fr_transceive,
	.now_ms = fr_now,
};

static kp_cert *ca;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (kp_cert_load(&ca, fuzz_data_file("fuzz-cert.pem")) != 0)
		ca = NULL;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[KP_TOKEN_KEY_LEN] = { 7 };
	const kp_cert *cas[1] = { ca };
	struct fuzz_reader fr = { { &fuzz_ops }, { data, size } };
	struct kp_card_info info;
	struct kp_card_id_cfg cfg = {
		.token_key = key, .jpki_cas = cas, .n_jpki_cas = ca != NULL ? 1 : 0,
		.timeout_ms = 100, .now_ms = 1800000000000,
	};
	struct kp_card_id id;
	struct kp_jpki j;
	uint8_t hash[KP_SHA256_LEN] = { 0 }, sig[512];
	size_t sig_len;
	int tries;

	if (size < 1)
		return 0;
	fr.in.p++;
	fr.in.n--;
	memset(&info, 0, sizeof(info));
	memset(&id, 0, sizeof(id));
	cfg.flags = data[0] & (KP_CARD_ID_BALANCE | KP_CARD_ID_CERT);
	if (data[0] & 0x80) {
		info.tech = KP_TECH_ISO14443B;
		info.baud_kbps = 106;
		memcpy(info.u.b.pupi, "\x01\x02\x03\x04", 4);
	} else {
		info.tech = KP_TECH_FELICA;
		info.baud_kbps = 212;
		memcpy(info.u.felica.idm, "\x01\x2e\x45\x67\x89\xab\xcd\xef", 8);
	}
	(void)kp_card_identify(&fr.base, &info, &cfg, &id);
	kp_card_id_wipe(&id);
	if (info.tech == KP_TECH_ISO14443B) {
		kp_jpki_init(&j, &fr.base, 100);
		if (kp_jpki_pin_tries(&j, &tries) == KP_OK)
			(void)kp_jpki_verify_pin(&j, "1234", &tries);
		(void)kp_jpki_sign(&j, hash, sig, sizeof(sig), &sig_len);
	}
	return 0;
}
