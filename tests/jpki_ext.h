/* SPDX-License-Identifier: Apache-2.0 */
/* The extensions of a real JPKI user-authentication certificate (an OpenSSL config
 * section), so that the test cards have its size; used by test_jpki and bench_jpki. */
#ifndef KP_TEST_JPKI_EXT_H
#define KP_TEST_JPKI_EXT_H

static __attribute__((unused)) const char jpki_ext[] =
	"[v3]\n"
	"basicConstraints = critical, CA:FALSE\n"
	"keyUsage = critical, digitalSignature\n"
	"subjectKeyIdentifier = hash\n"
	"authorityKeyIdentifier = keyid, issuer\n"
	"certificatePolicies = @pol\n"
	"crlDistributionPoints = cdp1\n"
	"authorityInfoAccess = OCSP;URI:http://ocsp-auth.jpki-test.example/, "
	"caIssuers;URI:http://www.jpki-test.example/cert/JPKI_for_user_authentication_test_CA.cer\n"
	"[pol]\n"
	"policyIdentifier = 1.2.392.200149.8.5.1.3.30\n"
	"CPS.1 = \"http://www.jpki-test.example/cps/user_authentication_certification_practice_statement.html\"\n"
	"[cdp1]\n"
	"fullname = URI:ldap://cdp.jpki-test.example/cn%3dCRL1%2cou%3dJPKI%20for%20user%20"
	"authentication%20test%2cou%3dJapan%20Agency%20for%20Local%20Authority%20Information%20"
	"Systems%2co%3dJPKI%2cc%3dJP?certificateRevocationList, "
	"URI:http://crl.jpki-test.example/crl/user_authentication/partitioned/0001.crl\n";

#endif
