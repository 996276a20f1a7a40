/* lpnx.net: DICOM networking through the DCMTK shim in io/dicom_net.cpp.
 *
 *   listen{aet =, port =, spool = [, host =, allow = {...}, timeout = 30]} -> server
 *   server:port() -> the bound port
 *   server:events() -> {event, ...} (oldest first; possibly empty)
 *   server:wait(seconds) -> true when events are pending, false after the time
 *   server:close() (also __close and __gc; safe twice)
 *   store{host =, port =, aet =, called =, files = {...} [, timeout = 30]} -> results | nil, err
 *   echo{host =, port =, aet =, called = [, timeout = 30]} -> true | nil, err
 *
 * Events are tables {kind = "association" | "rejected" | "echo" |
 * "received" | "failed" | "error", ...} with the fields dicom_net.h's
 * lpnx_net_event has for that kind (empty strings left out). A store
 * result is {ok =, sop_instance_uid =, status = (when the peer answered),
 * reason = (when not ok)}.
 *
 * The server lives in a Lua-owned userdata: the collector closes and frees
 * it. A store's results live in a Lua-owned buffer while they are turned
 * into tables. */
#include <string.h>

#include "../io/dicom_net.h"
#include "bind.h"

#define SERVER_MT "lpnx.NetServer"
#define DEFAULT_TIMEOUT 30

typedef struct {
    lpnx_net_server *s; /* NULL before listen succeeded */
} server_ud;

static server_ud *checkserver(lua_State *L, int i) { return luaL_checkudata(L, i, SERVER_MT); }

static int server_gc(lua_State *L) {
    server_ud *u = checkserver(L, 1);
    lpnx_net_free(u->s);
    u->s = NULL;
    return 0;
}

/* ---- option tables ---- */

/* t[key] as a string, NULL when absent (required: an error then). The
 * value stays on the stack so the string outlives the call. */
static const char *optstring(lua_State *L, int t, const char *key, int required) {
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNIL) {
        if (required) luaL_argerror(L, t, lua_pushfstring(L, "%s is required", key));
        return NULL;
    }
    if (type != LUA_TSTRING)
        luaL_argerror(L, t, lua_pushfstring(L, "%s must be a string, got %s", key, luaL_typename(L, -1)));
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len) luaL_argerror(L, t, lua_pushfstring(L, "%s contains a zero byte", key));
    return s;
}

/* t[key] as an integer in lo..hi, dflt when absent (required: an error then). */
static int optint(lua_State *L, int t, const char *key, int lo, int hi, int dflt, int required) {
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        if (required) luaL_argerror(L, t, lua_pushfstring(L, "%s is required", key));
        return dflt;
    }
    int isint = 0;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (type != LUA_TNUMBER || !isint || v < lo || v > hi)
        luaL_argerror(L, t, lua_pushfstring(L, "%s must be an integer in %d..%d, got %s", key, lo, hi,
                                            luaL_tolstring(L, -1, NULL)));
    lua_pop(L, 1);
    return (int)v;
}

/* An AE title option, checked. */
static const char *optaet(lua_State *L, int t, const char *key) {
    const char *s = optstring(L, t, key, 1);
    if (!lpnx_net_valid_aet(s))
        luaL_argerror(L, t, lua_pushfstring(L, "%s '%s' is not a valid AE title (1..16 printable ASCII characters, "
                                               "no backslash, not only spaces)", key, s));
    return s;
}

/* t[key] as an array of strings: a Lua-owned array of n pointers (into
 * strings kept alive by the table) pushed on the stack; NULL when absent. */
static const char **optlist(lua_State *L, int t, const char *key, size_t *n, int required) {
    int type = lua_getfield(L, t, key);
    *n = 0;
    if (type == LUA_TNIL) {
        if (required) luaL_argerror(L, t, lua_pushfstring(L, "%s is required", key));
        return NULL;
    }
    if (type != LUA_TTABLE)
        luaL_argerror(L, t, lua_pushfstring(L, "%s must be an array of strings, got %s", key, luaL_typename(L, -1)));
    int list = lua_gettop(L);
    size_t count = (size_t)lua_rawlen(L, list);
    const char **items = lua_newuserdatauv(L, (count ? count : 1) * sizeof *items, 0);
    for (size_t i = 0; i < count; i++) {
        lua_rawgeti(L, list, (lua_Integer)(i + 1));
        size_t len = 0;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (!s || strlen(s) != len)
            luaL_argerror(L, t, lua_pushfstring(L, "%s[%d] must be a string, got %s", key, (int)(i + 1),
                                                s ? "a string with a zero byte" : luaL_typename(L, -1)));
        items[i] = s; /* kept alive by the list */
        lua_pop(L, 1);
    }
    *n = count;
    return items;
}

/* The options table at 1 (argument errors name it). */
static void checkoptions(lua_State *L, const char *const *keys) {
    if (!lua_istable(L, 1))
        luaL_argerror(L, 1, lua_pushfstring(L, "expected a table of options, got %s", luaL_typename(L, 1)));
    lua_settop(L, 1);
    lpnx_checkkeys(L, 1, keys);
}

/* ---- the server ---- */

/* listen{aet =, port =, spool = [, host =, allow =, timeout =]} -> server */
static int l_listen(lua_State *L) {
    static const char *const keys[] = {"aet", "port", "host", "spool", "allow", "timeout", NULL};
    char err[1024];
    checkoptions(L, keys);
    luaL_checkstack(L, 20, "lpnx.net.listen");
    lpnx_net_listen_options o;
    memset(&o, 0, sizeof o);
    o.aet = optaet(L, 1, "aet");
    o.port = optint(L, 1, "port", 0, 65535, 0, 1);
    o.host = optstring(L, 1, "host", 0);
    o.spool = optstring(L, 1, "spool", 1);
    o.allow = optlist(L, 1, "allow", &o.nallow, 0);
    for (size_t i = 0; o.allow && i < o.nallow; i++) {
        const char *e = o.allow[i], *at = strrchr(e, '@');
        size_t aet_len = at ? (size_t)(at - e) : strlen(e);
        char aet[17] = "";
        if (aet_len >= 1 && aet_len <= 16) memcpy(aet, e, aet_len), aet[aet_len] = '\0';
        if (aet[0] == '\0' || !lpnx_net_valid_aet(aet) || (at && at[1] == '\0'))
            return luaL_argerror(L, 1, lua_pushfstring(L, "allow[%d] '%s' is not an AE title or AET@HOST",
                                                       (int)(i + 1), e));
    }
    o.timeout = optint(L, 1, "timeout", 1, 86400, DEFAULT_TIMEOUT, 0);
    server_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = NULL;
    luaL_setmetatable(L, SERVER_MT);
    if (lpnx_net_listen(&u->s, &o, err, sizeof err) != 0) return luaL_error(L, "lpnx.net.listen: %s", err);
    return 1;
}

/* The server at 1, still open; what names the method in errors. */
static lpnx_net_server *checkopen(lua_State *L, const char *what) {
    server_ud *u = checkserver(L, 1);
    if (!u->s) luaL_error(L, "lpnx.net server:%s: the server was freed", what);
    return u->s;
}

static int s_port(lua_State *L) {
    lua_pushinteger(L, lpnx_net_port(checkopen(L, "port")));
    return 1;
}

static void setstr(lua_State *L, int t, const char *key, const char *v) {
    if (!v || !*v) return;
    lua_pushstring(L, v);
    lua_setfield(L, t, key);
}

static const char *const KIND_NAMES[] = {"association", "rejected", "echo", "received", "failed", "error"};

/* The event as a table, pushed. */
static void pushevent(lua_State *L, const lpnx_net_event *ev) {
    lua_createtable(L, 0, 10);
    int t = lua_gettop(L);
    setstr(L, t, "kind", ev->kind >= 0 && ev->kind <= LPNX_NET_ERROR ? KIND_NAMES[ev->kind] : "error");
    setstr(L, t, "calling_aet", ev->calling_aet);
    setstr(L, t, "called_aet", ev->called_aet);
    setstr(L, t, "peer", ev->peer);
    setstr(L, t, "sop_class_uid", ev->sop_class_uid);
    setstr(L, t, "sop_instance_uid", ev->sop_instance_uid);
    setstr(L, t, "transfer_syntax", ev->transfer_syntax);
    setstr(L, t, "path", ev->path);
    setstr(L, t, "reason", ev->reason);
    if (ev->kind == LPNX_NET_RECEIVED) {
        lua_pushinteger(L, (lua_Integer)ev->bytes);
        lua_setfield(L, t, "bytes");
    }
    if (ev->status >= 0) {
        lua_pushinteger(L, ev->status);
        lua_setfield(L, t, "status");
    }
}

/* server:events() -> the events queued when it was called, oldest first */
static int s_events(lua_State *L) {
    lpnx_net_server *s = checkopen(L, "events");
    size_t n = lpnx_net_pending(s);
    lua_createtable(L, (int)(n < 1024 ? n : 1024), 0);
    /* the event is copied out of the queue before Lua may raise */
    lpnx_net_event *ev = lua_newuserdatauv(L, sizeof *ev, 0);
    lua_Integer count = 0;
    for (size_t i = 0; i < n && lpnx_net_next_event(s, ev); i++) {
        pushevent(L, ev);
        lua_rawseti(L, -3, ++count);
    }
    lua_pop(L, 1);
    return 1;
}

/* server:wait(seconds) -> true when events are pending */
static int s_wait(lua_State *L) {
    lpnx_net_server *s = checkopen(L, "wait");
    lua_Number seconds = luaL_checknumber(L, 2);
    if (!(seconds >= 0 && seconds <= 86400))
        return luaL_argerror(L, 2, lua_pushfstring(L, "seconds must be in [0, 86400], got %f", (double)seconds));
    lua_pushboolean(L, lpnx_net_wait(s, (double)seconds));
    return 1;
}

/* server:close(): stops listening, waits for the thread; events stay */
static int s_close(lua_State *L) {
    server_ud *u = checkserver(L, 1);
    lpnx_net_close(u->s);
    return 0;
}

static int s_tostring(lua_State *L) {
    server_ud *u = checkserver(L, 1);
    if (u->s)
        lua_pushfstring(L, "lpnx.net server (port %d)", lpnx_net_port(u->s));
    else
        lua_pushliteral(L, "lpnx.net server (not listening)");
    return 1;
}

/* ---- the SCU side ---- */

/* The peer fields of the options at 1. */
static void checkpeer(lua_State *L, lpnx_net_peer *p) {
    p->host = optstring(L, 1, "host", 1);
    p->port = optint(L, 1, "port", 1, 65535, 0, 1);
    p->aet = optaet(L, 1, "aet");
    p->called = optaet(L, 1, "called");
    p->timeout = optint(L, 1, "timeout", 1, 86400, DEFAULT_TIMEOUT, 0);
}

/* store{host =, port =, aet =, called =, files = {...} [, timeout =]} -> results | nil, err */
static int l_store(lua_State *L) {
    static const char *const keys[] = {"host", "port", "aet", "called", "files", "timeout", NULL};
    char err[1024];
    checkoptions(L, keys);
    luaL_checkstack(L, 20, "lpnx.net.store");
    lpnx_net_peer p;
    checkpeer(L, &p);
    size_t n = 0;
    const char **files = optlist(L, 1, "files", &n, 1);
    if (n > 100000) return luaL_argerror(L, 1, "files: more than 100000 files in one call");
    lpnx_net_store_result *results = lua_newuserdatauv(L, (n ? n : 1) * sizeof *results, 0); /* (n), Lua-owned */
    if (lpnx_net_store(&p, files, n, results, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        const lpnx_net_store_result *r = &results[i];
        lua_createtable(L, 0, 4);
        int t = lua_gettop(L);
        lua_pushboolean(L, r->ok);
        lua_setfield(L, t, "ok");
        if (r->sent) {
            lua_pushinteger(L, r->status);
            lua_setfield(L, t, "status");
        }
        setstr(L, t, "sop_instance_uid", r->sop_instance_uid);
        if (!r->ok) setstr(L, t, "reason", r->reason[0] ? r->reason : "not sent");
        lua_rawseti(L, -2, (lua_Integer)(i + 1));
    }
    return 1;
}

/* echo{host =, port =, aet =, called = [, timeout =]} -> true | nil, err */
static int l_echo(lua_State *L) {
    static const char *const keys[] = {"host", "port", "aet", "called", "timeout", NULL};
    char err[1024];
    checkoptions(L, keys);
    luaL_checkstack(L, 20, "lpnx.net.echo");
    lpnx_net_peer p;
    checkpeer(L, &p);
    if (lpnx_net_echo(&p, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg server_methods[] = {
    {"port", s_port}, {"events", s_events}, {"wait", s_wait}, {"close", s_close}, {NULL, NULL}};

static const luaL_Reg functions[] = {{"listen", l_listen}, {"store", l_store}, {"echo", l_echo}, {NULL, NULL}};

void lpnx_open_net(lua_State *L) {
    if (luaL_newmetatable(L, SERVER_MT)) {
        luaL_newlib(L, server_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, server_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, s_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, s_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "net");
}
