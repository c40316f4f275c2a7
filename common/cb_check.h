
/*
 * Copyright (C) chatbridge authors
 *
 * The one way every Check unit test runs its suite: all cases, in the mode
 * CK_FORK and friends say, exit status 1 when any failed.
 */

#ifndef _CB_CHECK_H_INCLUDED_
#define _CB_CHECK_H_INCLUDED_


#include <check.h>


static inline int
cb_check_run(Suite *s)
{
    int       failed;
    SRunner  *sr;

    sr = srunner_create(s);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    return failed ? 1 : 0;
}


#endif /* _CB_CHECK_H_INCLUDED_ */
