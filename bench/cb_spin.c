
/*
 * Copyright (C) chatbridge authors
 *
 * cb_spin: keeps one CPU from going idle.  bench/run.sh runs it under
 * SCHED_IDLE (it gets the CPU only when nothing else wants it) for the
 * round-trip diagnostic: on a virtual machine an idle vCPU halts, and
 * waking it costs tens of microseconds that no server code can save.
 */


int
main(void)
{
    for ( ;; ) {
        __asm__ volatile ("" ::: "memory");
    }
}
