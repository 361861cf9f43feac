tests/backend/test_delta.c:279:119: error: expected expression before ‘)’ token
  279 |         { int r_ = kp_bstore_linkage_revoke(f->s, link1, NOW); if (r_) fprintf(stderr, "DBG %s\n", kp_bstore_errmsg(f-)); }
      |                                                                                                                       ^
make: *** [Makefile:185: build/obj/tests/backend/test_delta.o] Error 1
[  ERROR   ] --- 0xfffffffffffffc9d != 0
[   LINE   ] --- tests/backend/test_delta.c:279: error: Failure!
[  FAILED  ] test_delta_equals_full_bundle
[  ERROR   ] --- 0x2 != 0x1
[   LINE   ] --- tests/backend/test_delta.c:451: error: Failure!
[  FAILED  ] test_behind_the_log_gets_full
[  PASSED  ] 3 test(s).
[  FAILED  ] 2 test(s), listed below:
[  FAILED  ] test_delta_equals_full_bundle
[  FAILED  ] test_behind_the_log_gets_full
 2 FAILED TEST(S)
