
/*
 * Copyright (C) chatbridge authors
 *
 * The "chatbridge" shared zone: state that every nginx worker shares and
 * that outlives a reload, touched only by nginx processes (the sidecar has
 * its own segment).  It holds
 *
 *   - round-robin counters, found by the hash of a name: an LMArena
 *     model's session pool, an upstream key pool;
 *   - cooldowns: "this session" or "this key" failed, skip it until then;
 *     a small open-addressing table of (hash, until);
 *   - the LMArena captures (see ngx_http_chatbridge_arena.c).
 *
 * Times are ngx_current_msec, a monotonic clock that all processes share.
 */


#include <ngx_crc32.h>

#include "ngx_http_chatbridge_module.h"


#define NGX_HTTP_CHATBRIDGE_ZONE_SIZE       (2 * 1024 * 1024)
#define NGX_HTTP_CHATBRIDGE_PROBES          64


static ngx_int_t ngx_http_chatbridge_zone_init(ngx_shm_zone_t *zone,
    void *data);


ngx_int_t
ngx_http_chatbridge_zone_add(ngx_conf_t *cf)
{
    ngx_str_t                         name;
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_chatbridge_module);

    if (mcf->zone) {
        return NGX_OK;
    }

    ngx_str_set(&name, "chatbridge");

    mcf->zone = ngx_shared_memory_add(cf, &name, NGX_HTTP_CHATBRIDGE_ZONE_SIZE,
                                      &ngx_http_chatbridge_module);
    if (mcf->zone == NULL) {
        return NGX_ERROR;
    }

    mcf->zone->init = ngx_http_chatbridge_zone_init;
    mcf->zone->data = ngx_pcalloc(cf->pool, sizeof(ngx_http_chatbridge_zone_t));

    return mcf->zone->data ? NGX_OK : NGX_ERROR;
}


/* the zone as this request's configuration sees it; NULL if there is none */

ngx_http_chatbridge_zone_t *
ngx_http_chatbridge_zone(ngx_http_request_t *r)
{
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_chatbridge_module);

    if (mcf->zone == NULL || mcf->zone->data == NULL) {
        return NULL;
    }

    return mcf->zone->data;
}


/* the next value of the round-robin counter named name */

ngx_atomic_uint_t
ngx_http_chatbridge_zone_next(ngx_http_chatbridge_zone_t *z, const char *kind,
    u_char *name, size_t len)
{
    uint32_t  crc;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, (u_char *) kind, ngx_strlen(kind) + 1);
    ngx_crc32_update(&crc, name, len);
    ngx_crc32_final(crc);

    return ngx_atomic_fetch_add(&z->sh->rr[crc % NGX_HTTP_CHATBRIDGE_RR], 1);
}


/* the cooldown identity of a thing: kind, then its parts; never 0 */

uint32_t
ngx_http_chatbridge_zone_key(const char *kind, u_char *a, size_t alen,
    u_char *b, size_t blen)
{
    uint32_t  crc;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, (u_char *) kind, ngx_strlen(kind) + 1);
    ngx_crc32_update(&crc, a, alen);
    ngx_crc32_update(&crc, (u_char *) "", 1);
    ngx_crc32_update(&crc, b, blen);
    ngx_crc32_final(crc);

    return crc ? crc : 1;
}


/* how long key still rests, in ms; 0 if it does not */

ngx_msec_t
ngx_http_chatbridge_zone_cooling(ngx_http_chatbridge_zone_t *z, uint32_t key)
{
    ngx_msec_t                    left, now;
    ngx_uint_t                    k, i;
    ngx_http_chatbridge_sh_t     *sh;

    sh = z->sh;
    now = ngx_current_msec;
    left = 0;

    ngx_shmtx_lock(&z->shpool->mutex);

    for (k = 0; k < NGX_HTTP_CHATBRIDGE_PROBES; k++) {
        i = (key + k) % NGX_HTTP_CHATBRIDGE_COOL;

        if (sh->cool_key[i] == key) {
            if ((ngx_msec_int_t) (sh->cool_until[i] - now) > 0) {
                left = sh->cool_until[i] - now;
            }

            break;
        }
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    return left;
}


/* key rests until ms from now, or longer if it already does */

void
ngx_http_chatbridge_zone_cool(ngx_http_chatbridge_zone_t *z, uint32_t key,
    ngx_msec_t ms)
{
    ngx_msec_t                 now, until;
    ngx_uint_t                 k, i, free;
    ngx_http_chatbridge_sh_t  *sh;

    sh = z->sh;
    now = ngx_current_msec;
    until = now + ms;

    ngx_shmtx_lock(&z->shpool->mutex);

    free = NGX_HTTP_CHATBRIDGE_COOL;

    for (k = 0; k < NGX_HTTP_CHATBRIDGE_PROBES; k++) {
        i = (key + k) % NGX_HTTP_CHATBRIDGE_COOL;

        if (sh->cool_key[i] == key) {
            free = i;

            if ((ngx_msec_int_t) (sh->cool_until[i] - until) > 0) {
                until = sh->cool_until[i];
            }

            break;
        }

        if (free == NGX_HTTP_CHATBRIDGE_COOL
            && (sh->cool_key[i] == 0
                || (ngx_msec_int_t) (sh->cool_until[i] - now) <= 0))
        {
            free = i;
        }
    }

    if (free == NGX_HTTP_CHATBRIDGE_COOL) {
        free = key % NGX_HTTP_CHATBRIDGE_COOL;    /* full: evict */
    }

    sh->cool_key[free] = key;
    sh->cool_until[free] = until;

    ngx_shmtx_unlock(&z->shpool->mutex);
}


static ngx_int_t
ngx_http_chatbridge_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t             *shpool;
    ngx_http_chatbridge_sh_t    *sh;
    ngx_http_chatbridge_zone_t  *z, *old;

    z = zone->data;
    old = data;
    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    if (old) {
        sh = old->sh;       /* a reload: counters, cooldowns, captures stay */

    } else if (zone->shm.exists) {
        sh = shpool->data;

    } else {
        sh = ngx_slab_calloc(shpool, sizeof(ngx_http_chatbridge_sh_t));
        if (sh == NULL) {
            return NGX_ERROR;
        }

        sh->version = 1;
        shpool->data = sh;
        shpool->log_ctx = (u_char *) " in chatbridge zone";
    }

    z->sh = sh;
    z->shpool = shpool;

    /* this configuration read its files now: captures before are in them */

    ngx_shmtx_lock(&shpool->mutex);
    z->generation = ++sh->generation;
    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}
