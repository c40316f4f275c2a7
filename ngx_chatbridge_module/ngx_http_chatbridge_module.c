
/*
 * Copyright (C) chatbridge authors
 *
 * chatbridge: an OpenAI-compatible API served by nginx, answered by browser
 * tabs through a sidecar.  This file holds the directives, configuration,
 * process hooks and the routing of the /v1 requests.
 */


#include "ngx_http_chatbridge_module.h"


static ngx_int_t ngx_http_chatbridge_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_cors(ngx_http_request_t *r);
static ngx_uint_t ngx_http_chatbridge_route(ngx_http_request_t *r);
static ngx_int_t ngx_http_chatbridge_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_chatbridge_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_chatbridge_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_chatbridge_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_chatbridge_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_chatbridge_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_chatbridge(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_chatbridge_init_process(ngx_cycle_t *cycle);
static void ngx_http_chatbridge_exit_process(ngx_cycle_t *cycle);

ngx_int_t ngx_http_chatbridge_errors_init(ngx_conf_t *cf);
char *ngx_http_chatbridge_browser_token_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
char *ngx_http_chatbridge_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_conf_enum_t  ngx_http_chatbridge_kinds[] = {
    { ngx_string("any"), CB_KIND_ANY },
    { ngx_string("arena"), CB_KIND_ARENA },
    { ngx_string("tavern"), CB_KIND_TAVERN },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_chatbridge_messages_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};


static ngx_conf_num_bounds_t  ngx_http_chatbridge_attachments_bounds = {
    ngx_conf_check_num_bounds, 0, 1000
};


static ngx_command_t  ngx_http_chatbridge_commands[] = {

    { ngx_string("chatbridge"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chatbridge,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chatbridge_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_chatbridge_admin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_admin_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_chatbridge_admin_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_userscript"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chatbridge_userscript,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_browser_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, browser_token),
      NULL },

    { ngx_string("chatbridge_browser_token_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chatbridge_browser_token_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_browser_ws_url"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, browser_ws_url),
      NULL },

    { ngx_string("chatbridge_sidecar"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_main_conf_t, sidecar),
      NULL },

    { ngx_string("chatbridge_link_wait"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_main_conf_t, link_wait),
      NULL },

    { ngx_string("chatbridge_adapter"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, kind),
      &ngx_http_chatbridge_kinds },

    { ngx_string("chatbridge_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, max_body_size),
      NULL },

    { ngx_string("chatbridge_max_response_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, max_response_size),
      NULL },

    { ngx_string("chatbridge_max_messages"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, max_messages),
      &ngx_http_chatbridge_messages_bounds },

    { ngx_string("chatbridge_max_text"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, max_text),
      NULL },

    { ngx_string("chatbridge_max_attachment_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, max_attachment),
      NULL },

    { ngx_string("chatbridge_max_attachments"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, max_attachments),
      &ngx_http_chatbridge_attachments_bounds },

    { ngx_string("chatbridge_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, idle_timeout),
      NULL },

    { ngx_string("chatbridge_total_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, total_timeout),
      NULL },

    { ngx_string("chatbridge_keepalive"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, keepalive),
      NULL },

    { ngx_string("chatbridge_tavern_mode"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, tavern),
      NULL },

    { ngx_string("chatbridge_bypass_mode"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, bypass),
      NULL },

    { ngx_string("chatbridge_cors"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, cors),
      NULL },

    { ngx_string("chatbridge_arena"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chatbridge_arena,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_arena_cooldown"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, arena_cooldown),
      NULL },

    { ngx_string("chatbridge_key_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_chatbridge_key_pool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_upstream_key_pool"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chatbridge_upstream_key_pool,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_chatbridge_api_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("chatbridge_api_keys_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chatbridge_api_keys_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, keys),
      NULL },

    { ngx_string("chatbridge_admin_keys_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chatbridge_api_keys_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_chatbridge_loc_conf_t, admin_keys),
      NULL },

    { ngx_string("chatbridge_models_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_chatbridge_models_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_chatbridge_module_ctx = {
    ngx_http_chatbridge_preconfiguration,  /* preconfiguration */
    ngx_http_chatbridge_postconfiguration, /* postconfiguration */

    ngx_http_chatbridge_create_main_conf,  /* create main configuration */
    ngx_http_chatbridge_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_chatbridge_create_loc_conf,   /* create location configuration */
    ngx_http_chatbridge_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_chatbridge_module = {
    NGX_MODULE_V1,
    &ngx_http_chatbridge_module_ctx,       /* module context */
    ngx_http_chatbridge_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_chatbridge_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_chatbridge_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_chatbridge_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_uint_t                       what;
    const char                      *error;
    ngx_table_elt_t                 *allow;
    ngx_http_chatbridge_ctx_t       *ctx;
    ngx_http_chatbridge_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_chatbridge_module);

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_chatbridge_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* every answer, errors included, carries X-Request-Id */

    if (ngx_http_chatbridge_set_request_id(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (lcf->cors) {
        rc = ngx_http_chatbridge_cors(r);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    if (ngx_http_chatbridge_check_key(r, ctx, lcf->keys, &error) != NGX_OK) {
        ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_REJECTED;
        return ngx_http_chatbridge_unauthorized(r, "Bearer", "invalid_api_key",
                                                error);
    }

    what = ngx_http_chatbridge_route(r);

    if (what == 0) {
        ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_REJECTED;
        ngx_http_discard_request_body(r);
        return ngx_http_chatbridge_send_error(r, NGX_HTTP_NOT_FOUND,
                   "unknown_url", NULL,
                   "Unknown request URL. Try POST /v1/chat/completions, "
                   "GET /v1/models or POST /v1/images/generations.",
                   sizeof("Unknown request URL. Try POST /v1/chat/completions,"
                          " GET /v1/models or POST /v1/images/generations.")
                   - 1, 0);
    }

    if (what == NGX_HTTP_CHATBRIDGE_MODELS || what == NGX_HTTP_CHATBRIDGE_MODEL)
    {
        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            goto not_allowed;
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_chatbridge_models_handler(r,
                                       what == NGX_HTTP_CHATBRIDGE_MODEL);
    }

    if (r->method != NGX_HTTP_POST) {
        goto not_allowed;
    }

    if (what == NGX_HTTP_CHATBRIDGE_IMAGES) {
        return ngx_http_chatbridge_images_handler(r);
    }

    return ngx_http_chatbridge_chat_handler(r);

not_allowed:

    ctx->outcome = NGX_HTTP_CHATBRIDGE_OUTCOME_REJECTED;

    allow = ngx_list_push(&r->headers_out.headers);
    if (allow == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    allow->hash = 1;
    ngx_str_set(&allow->key, "Allow");

    if (what == NGX_HTTP_CHATBRIDGE_MODELS
        || what == NGX_HTTP_CHATBRIDGE_MODEL)
    {
        ngx_str_set(&allow->value, "GET, HEAD");

    } else {
        ngx_str_set(&allow->value, "POST");
    }

    ngx_http_discard_request_body(r);

    return ngx_http_chatbridge_send_error(r, NGX_HTTP_NOT_ALLOWED,
               "method_not_allowed", NULL,
               "This method is not allowed for this URL; see the Allow "
               "header.",
               sizeof("This method is not allowed for this URL; see the "
                      "Allow header.") - 1, 0);
}


/*
 * chatbridge_cors: web pages on other origins may call the API.  Every
 * answer carries Access-Control-Allow-Origin; a preflight is answered here,
 * before the key is checked (a preflight carries no credentials).
 */

static ngx_int_t
ngx_http_chatbridge_cors(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    static ngx_str_t  headers[][2] = {
        { ngx_string("Access-Control-Allow-Origin"), ngx_string("*") },
        { ngx_string("Access-Control-Expose-Headers"),
          ngx_string("X-Request-Id, Retry-After") },
        { ngx_string("Access-Control-Allow-Methods"),
          ngx_string("GET, POST, OPTIONS") },
        { ngx_string("Access-Control-Allow-Headers"),
          ngx_string("Authorization, Content-Type, X-Api-Key, Api-Key, "
                     "OpenAI-Organization, OpenAI-Project, X-Stainless-OS, "
                     "X-Stainless-Lang, X-Stainless-Package-Version, "
                     "X-Stainless-Runtime, X-Stainless-Runtime-Version, "
                     "X-Stainless-Arch, X-Stainless-Retry-Count, "
                     "X-Stainless-Timeout") },
        { ngx_string("Access-Control-Max-Age"), ngx_string("86400") }
    };

    for (i = 0; i < (r->method == NGX_HTTP_OPTIONS ? 5 : 2); i++) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        h->key = headers[i][0];
        h->value = headers[i][1];
    }

    if (r->method != NGX_HTTP_OPTIONS) {
        return NGX_DECLINED;
    }

    ngx_http_discard_request_body(r);

    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


/*
 * The API is found by the tail of the URI, so it works under any location
 * prefix: /v1/chat/completions, /openai/v1/chat/completions, /x/models ...
 */

static ngx_uint_t
ngx_http_chatbridge_route(ngx_http_request_t *r)
{
    u_char     *p, *end;
    ngx_str_t   uri;

    uri = r->uri;

    while (uri.len > 1 && uri.data[uri.len - 1] == '/') {
        uri.len--;
    }

    end = uri.data + uri.len;

#define ngx_http_chatbridge_tail(s)                                          \
    (uri.len >= sizeof(s) - 1                                                \
     && ngx_strncmp(end - (sizeof(s) - 1), s, sizeof(s) - 1) == 0)

    if (ngx_http_chatbridge_tail("/chat/completions")) {
        return NGX_HTTP_CHATBRIDGE_CHAT;
    }

    if (ngx_http_chatbridge_tail("/images/generations")) {
        return NGX_HTTP_CHATBRIDGE_IMAGES;
    }

    if (ngx_http_chatbridge_tail("/models")) {
        return NGX_HTTP_CHATBRIDGE_MODELS;
    }

#undef ngx_http_chatbridge_tail

    /* /models/<id>, where the id may itself contain slashes */

    p = ngx_strlcasestrn(uri.data, end, (u_char *) "/models/", 8 - 1);

    if (p && p + 8 < end) {
        return NGX_HTTP_CHATBRIDGE_MODEL;
    }

    return 0;
}


static ngx_int_t
ngx_http_chatbridge_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_chatbridge_add_variables(cf);
}


static ngx_int_t
ngx_http_chatbridge_postconfiguration(ngx_conf_t *cf)
{
    ngx_str_t                         name;
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_chatbridge_module);

    ngx_str_set(&name, "request_id");

    mcf->request_id_index = ngx_http_get_variable_index(cf, &name);
    if (mcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (ngx_http_chatbridge_keys_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_chatbridge_errors_init(cf);
}


static void *
ngx_http_chatbridge_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_chatbridge_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->sidecar = { 0, NULL };
     *     mcf->link = NULL;
     */

    mcf->link_wait = NGX_CONF_UNSET_MSEC;

    if (ngx_array_init(&mcf->key_pools, cf->pool, 2,
                       sizeof(ngx_http_chatbridge_key_pool_t))
        != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static char *
ngx_http_chatbridge_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_chatbridge_main_conf_t  *mcf = conf;

    if (mcf->sidecar.len == 0) {
        ngx_str_set(&mcf->sidecar, "/run/chatbridge/sidecar.sock");
    }

    if (mcf->sidecar.len >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chatbridge_sidecar path \"%V\" is too long",
                           &mcf->sidecar);
        return NGX_CONF_ERROR;
    }

    ngx_conf_init_msec_value(mcf->link_wait, 1000);

    return NGX_CONF_OK;
}


static void *
ngx_http_chatbridge_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_chatbridge_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_chatbridge_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;
    conf->kind = NGX_CONF_UNSET_UINT;
    conf->max_body_size = NGX_CONF_UNSET_SIZE;
    conf->max_response_size = NGX_CONF_UNSET_SIZE;
    conf->max_messages = NGX_CONF_UNSET_UINT;
    conf->max_text = NGX_CONF_UNSET_SIZE;
    conf->max_attachment = NGX_CONF_UNSET_SIZE;
    conf->max_attachments = NGX_CONF_UNSET_UINT;
    conf->idle_timeout = NGX_CONF_UNSET_MSEC;
    conf->total_timeout = NGX_CONF_UNSET_MSEC;
    conf->keepalive = NGX_CONF_UNSET_MSEC;
    conf->tavern = NGX_CONF_UNSET;
    conf->bypass = NGX_CONF_UNSET;
    conf->cors = NGX_CONF_UNSET;
    conf->keys = NGX_CONF_UNSET_PTR;
    conf->models = NGX_CONF_UNSET_PTR;
    conf->arena = NGX_CONF_UNSET_PTR;
    conf->arena_cooldown = NGX_CONF_UNSET_MSEC;
    conf->admin_keys = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_chatbridge_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_chatbridge_loc_conf_t  *prev = parent;
    ngx_http_chatbridge_loc_conf_t  *conf = child;

    char                      *error;
    ngx_http_core_loc_conf_t  *clcf;

    /* LMArena Bridge's files fill in what the directives leave unset */
    if (ngx_http_chatbridge_arena_merge(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_uint_value(conf->kind, prev->kind, CB_KIND_ANY);
    ngx_conf_merge_size_value(conf->max_body_size, prev->max_body_size,
                              16 * 1024 * 1024);
    ngx_conf_merge_size_value(conf->max_response_size,
                              prev->max_response_size, 8 * 1024 * 1024);
    ngx_conf_merge_uint_value(conf->max_messages, prev->max_messages, 2048);
    ngx_conf_merge_size_value(conf->max_text, prev->max_text,
                              4 * 1024 * 1024);
    ngx_conf_merge_size_value(conf->max_attachment, prev->max_attachment,
                              10 * 1024 * 1024);
    ngx_conf_merge_uint_value(conf->max_attachments, prev->max_attachments,
                              16);
    ngx_conf_merge_msec_value(conf->idle_timeout, prev->idle_timeout,
                              360000);
    ngx_conf_merge_msec_value(conf->total_timeout, prev->total_timeout,
                              1800000);
    ngx_conf_merge_msec_value(conf->keepalive, prev->keepalive, 15000);
    ngx_conf_merge_value(conf->tavern, prev->tavern, 0);
    ngx_conf_merge_value(conf->bypass, prev->bypass, 0);
    ngx_conf_merge_value(conf->cors, prev->cors, 0);
    ngx_conf_merge_ptr_value(conf->keys, prev->keys, NULL);
    ngx_conf_merge_ptr_value(conf->models, prev->models, NULL);
    ngx_conf_merge_ptr_value(conf->admin_keys, prev->admin_keys, NULL);
    ngx_conf_merge_str_value(conf->browser_token, prev->browser_token, "");
    ngx_conf_merge_str_value(conf->browser_ws_url, prev->browser_ws_url, "");

    if (conf->userscript.data && conf->browser_token.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"chatbridge_userscript\" needs "
                           "\"chatbridge_browser_token\" or "
                           "\"chatbridge_browser_token_file\"");
        return NGX_CONF_ERROR;
    }

    if (conf->userscript.data) {
        error = ngx_http_chatbridge_userscript_check(&conf->browser_token);

        if (error == NULL) {
            error = ngx_http_chatbridge_userscript_check(
                                                      &conf->browser_ws_url);
        }

        if (error) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "the browser token or WebSocket URL %s",
                               error);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_chatbridge_keys_merge(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (conf->idle_timeout == 0 || conf->total_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "chatbridge timeouts must be greater than zero");
        return NGX_CONF_ERROR;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    /*
     * chatbridge_max_body_size is the one body limit of a chatbridge
     * location: nginx's own limit follows it, and bodies up to 1m stay in
     * memory.  The core module's merge has already run.
     */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    clcf->client_max_body_size = conf->max_body_size;

    if (clcf->client_body_buffer_size
        < ngx_min(conf->max_body_size, 1024 * 1024))
    {
        clcf->client_body_buffer_size = ngx_min(conf->max_body_size,
                                                1024 * 1024);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_chatbridge(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_chatbridge_loc_conf_t  *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    lcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_chatbridge_handler;

    ngx_http_chatbridge_needs_sidecar(cf);

    return NGX_CONF_OK;
}


/*
 * Workers link to the sidecar only when a location talks to it: a system
 * nginx with the module loaded for one site stays quiet elsewhere.
 */

void
ngx_http_chatbridge_needs_sidecar(ngx_conf_t *cf)
{
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_chatbridge_module);
    mcf->linked = 1;
}


static ngx_int_t
ngx_http_chatbridge_init_process(ngx_cycle_t *cycle)
{
    ngx_http_chatbridge_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_chatbridge_module);
    if (mcf == NULL || !mcf->linked) {
        return NGX_OK;
    }

    return ngx_http_chatbridge_link_init(cycle, mcf);
}


static void
ngx_http_chatbridge_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_chatbridge_module);

    if (mcf && mcf->link) {
        ngx_http_chatbridge_link_exit(mcf->link);
        mcf->link = NULL;
    }
}


/* a small file named by a directive, read whole while nginx starts */

/* the request's context, made by whichever needs it first: a handler, the
 * error filter, $chatbridge_key_name for limit_req */

ngx_http_chatbridge_ctx_t *
ngx_http_chatbridge_get_ctx(ngx_http_request_t *r)
{
    ngx_http_chatbridge_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_chatbridge_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_chatbridge_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request = r;
    ngx_http_set_ctx(r, ctx, ngx_http_chatbridge_module);

    return ctx;
}


/* $request_id: the answer's X-Request-Id, the task's id, the chunks' id */

ngx_int_t
ngx_http_chatbridge_set_request_id(ngx_http_request_t *r,
    ngx_http_chatbridge_ctx_t *ctx)
{
    ngx_http_variable_value_t        *v;
    ngx_http_chatbridge_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_chatbridge_module);

    v = ngx_http_get_indexed_variable(r, mcf->request_id_index);
    if (v == NULL || v->not_found || v->len == 0 || v->len > 32) {
        return NGX_ERROR;
    }

    ctx->request_id.data = v->data;
    ctx->request_id.len = v->len;

    return NGX_OK;
}


ngx_int_t
ngx_http_chatbridge_read_conf_file(ngx_conf_t *cf, ngx_str_t *name,
    size_t max, ngx_str_t *out)
{
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_int_t        rc;
    ngx_file_t       f;
    ngx_file_info_t  fi;

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    /* non-blocking: a FIFO in its place must not hang nginx -t or a reload */

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY|NGX_FILE_NONBLOCK,
                       NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed", name->data);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || !ngx_is_file(&fi)
        || (size_t) ngx_file_size(&fi) > max)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" is not a readable file of at most %uz "
                           "bytes", name->data, max);
        goto done;
    }

    out->data = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (out->data == NULL) {
        goto done;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.fd = fd;
    f.name = *name;
    f.log = cf->log;

    n = ngx_read_file(&f, out->data, ngx_file_size(&fi), 0);
    if (n == NGX_ERROR) {
        goto done;
    }

    out->len = n;
    rc = NGX_OK;

done:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", name->data);
    }

    return rc;
}
