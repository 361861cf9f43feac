/* SPDX-License-Identifier: Apache-2.0 */
/* One text for any error code of the protocol and the layers below it: crypto, TLS,
 * records and sync. Each module keeps its own range; the backend's codes are
 * kp_backend_strerror's, the terminal's kp_strerror's, and both fall back to this. */
#include "kp_proto.h"

const char *kp_sync_error_text(int rc)
{
	if (rc <= -0x280 && rc > -0x300)
		return kp_tls_strerror(rc);
	if (rc <= -0x200 && rc > -0x280)
		return kp_crypto_strerror(rc);
	if (rc <= -0x340 && rc > -0x360)
		return kp_sync_strerror(rc);
	if (rc <= -0x300 && rc > -0x340)
		return kp_record_strerror(rc);
	return rc == 0 ? "ok" : "unknown error";
}
