
/*
 * Copyright (C) chatbridge authors
 *
 * LMArena Bridge compatibility: its config.jsonc, models.json and
 * model_endpoint_map.json, read as they are, and the rules that turn them
 * into a session for each request.  Plain C on jansson, unit-tested.
 */

#ifndef _CB_ARENA_H_INCLUDED_
#define _CB_ARENA_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "cb_openai.h"


#ifdef __cplusplus
extern "C" {
#endif


#define CB_ARENA_DIRECT         1       /* "direct_chat" */
#define CB_ARENA_BATTLE         2       /* "battle" */

#define CB_ARENA_FILE_MAX       (4 * 1024 * 1024)
#define CB_ARENA_POOL_MAX       256


typedef struct {
    const char     *session_id;
    const char     *message_id;
    int             mode;               /* 0: the global mode */
    char            target;             /* 'a', 'b'; 0: the global target */
} cb_arena_entry_t;


typedef struct {
    json_t         *config;             /* config.jsonc */
    json_t         *models;             /* models.json, or NULL */
    json_t         *map;                /* model_endpoint_map.json, or NULL */

    cb_arena_entry_t  global;           /* session_id, message_id, mode,
                                           target of config.jsonc */
    int             use_default;        /* ..._if_mapping_not_found */
    int             tavern;             /* -1: the file does not say */
    int             bypass;             /* -1 */
    int             idle_timeout;       /* seconds, -1 */
    const char     *api_key;            /* NULL or "" : none */

    char            notes[512];         /* keys read but not used */
} cb_arena_t;


/* the session picked for a request, with the global defaults applied */

typedef struct {
    const char     *session_id;
    const char     *message_id;
    int             mode;
    char            target;
} cb_arena_session_t;


int cb_arena_load(cb_arena_t *a, const char *dir, char *err, size_t errlen);
void cb_arena_free(cb_arena_t *a);

void cb_arena_model(const cb_arena_t *a, const char *model,
    const char **uuid, size_t *uuid_len, int *image);

size_t cb_arena_pool(const cb_arena_t *a, json_t *live, const char *model,
    cb_arena_entry_t *out, size_t max, int *mapped);

int cb_arena_pick(size_t n, uint64_t counter,
    int (*cooling)(void *data, size_t i), void *data);

void cb_arena_resolve(const cb_arena_t *a, json_t *live,
    const cb_arena_entry_t *e, cb_arena_session_t *s);

int cb_arena_check(const cb_arena_session_t *s, const char *model,
    cb_err_t *err);

void cb_arena_positions(json_t *messages, const cb_arena_session_t *s);

json_t *cb_arena_task(const cb_arena_session_t *s, const char *uuid,
    size_t uuid_len, int image);

const char *cb_arena_mode_name(int mode);

/*
 * The checks cb_arena_load() makes of each file once it is parsed, for
 * whoever writes the files (the sidecar, after a capture): 0, or -1 with
 * err naming the file and what is wrong.
 */
int cb_arena_check_config(json_t *config, const char *file, char *err,
    size_t errlen);
int cb_arena_check_models(json_t *models, const char *file, char *err,
    size_t errlen);
int cb_arena_check_map(json_t *map, const char *file, char *err,
    size_t errlen);


#ifdef __cplusplus
}
#endif

#endif /* _CB_ARENA_H_INCLUDED_ */
