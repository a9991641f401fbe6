/*
 * A tiny OpenVPN plugin (API v3) for ferrovpn's tests: it asks for every
 * hook named in its arguments after the log file, appends one line per
 * call to the log file (hook, arguments, a few environment variables) and
 * answers CLIENT_CONNECT_V2 with a dynamic config: `ifconfig-push` of the
 * address in its `CC_PUSH=` argument. It keeps per-client contexts
 * (numbered in the order they are made; constructor and destructor are
 * logged) and logs which one each call got. The same object is loaded by the
 * stock OpenVPN 2.6 and by ferrovpn, so their hook sequences can be compared.
 *
 * With `FAIL_TLS_FINAL=n`, its n-th TLS_FINAL call (counting from 1)
 * fails; with `FAIL=HOOK` every call of HOOK fails. `ENV=a,b,...` logs
 * these environment variables too, `ENV=*` all of them (sorted, one a
 * line); `QUOTE_ARGS` logs each argument in quotes (to tell "a b" from
 * "a" "b"); `LOG_OPEN_CLOSE` logs `OPEN` and `CLOSE` (the plugin's
 * open and close calls, to count them across restarts).
 *
 * TLS_VERIFY calls also log what the plugin reads from the OpenSSL
 * certificate object in `current_cert` (with libcrypto: subject, serial,
 * SHA-256 of its DER), its depth, and the certificate variables of the
 * environment at that depth. With `FAIL_TLS_VERIFY_CN=name`, the call for
 * a certificate whose CN (read from the object) is `name` fails.
 *
 * argv: hooklog.so LOGFILE [CC_PUSH=a.b.c.d] [FAIL_TLS_FINAL=n]
 *       [FAIL_TLS_VERIFY_CN=name] [FAIL=HOOK] [ENV=a,b,...] [QUOTE_ARGS] HOOK...
 * Built with -lcrypto (OpenSSL 3 headers: libssl-dev).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openvpn/openvpn-plugin.h>

struct ctx {
    char log[512];
    char push[64];
    int clients_made;
    int fail_tls_final;
    int tls_finals;
    char fail_tls_verify_cn[64];
    int fail_type;
    char env[512];
    int quote_args;
    int log_open_close;
};

/* A per-client context: its number. */
struct client {
    int number;
};

static void log_line(struct ctx *c, const char *line, int number)
{
    FILE *f = fopen(c->log, "a");
    if (!f)
        return;
    fprintf(f, "%s #%d\n", line, number);
    fclose(f);
}

static const char *hook_name(int t)
{
    switch (t) {
    case OPENVPN_PLUGIN_UP: return "UP";
    case OPENVPN_PLUGIN_DOWN: return "DOWN";
    case OPENVPN_PLUGIN_ROUTE_UP: return "ROUTE_UP";
    case OPENVPN_PLUGIN_IPCHANGE: return "IPCHANGE";
    case OPENVPN_PLUGIN_ROUTE_PREDOWN: return "ROUTE_PREDOWN";
    case OPENVPN_PLUGIN_TLS_VERIFY: return "TLS_VERIFY";
    case OPENVPN_PLUGIN_AUTH_USER_PASS_VERIFY: return "AUTH_USER_PASS_VERIFY";
    case OPENVPN_PLUGIN_CLIENT_DISCONNECT: return "CLIENT_DISCONNECT";
    case OPENVPN_PLUGIN_LEARN_ADDRESS: return "LEARN_ADDRESS";
    case OPENVPN_PLUGIN_CLIENT_CONNECT_V2: return "CLIENT_CONNECT_V2";
    case OPENVPN_PLUGIN_TLS_FINAL: return "TLS_FINAL";
    case OPENVPN_PLUGIN_CLIENT_CONNECT_DEFER_V2: return "CLIENT_CONNECT_DEFER_V2";
    default: return NULL;
    }
}

static const char *env_get(const char *envp[], const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; envp && envp[i]; i++)
        if (!strncmp(envp[i], name, n) && envp[i][n] == '=')
            return envp[i] + n + 1;
    return "";
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int env_has(const char *envp[], const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; envp && envp[i]; i++)
        if (!strncmp(envp[i], name, n) && envp[i][n] == '=')
            return 1;
    return 0;
}

OPENVPN_EXPORT int
openvpn_plugin_open_v3(const int version, struct openvpn_plugin_args_open_in const *args,
                       struct openvpn_plugin_args_open_return *ret)
{
    (void)version;
    struct ctx *c = calloc(1, sizeof(*c));
    if (!c || !args->argv[1])
        return OPENVPN_PLUGIN_FUNC_ERROR;
    snprintf(c->log, sizeof(c->log), "%s", args->argv[1]);
    c->fail_type = -1;
    for (int i = 2; args->argv[i]; i++) {
        if (!strncmp(args->argv[i], "ENV=", 4)) {
            snprintf(c->env, sizeof(c->env), "%s", args->argv[i] + 4);
            continue;
        }
        if (!strcmp(args->argv[i], "LOG_OPEN_CLOSE")) {
            c->log_open_close = 1;
            continue;
        }
        if (!strcmp(args->argv[i], "QUOTE_ARGS")) {
            c->quote_args = 1;
            continue;
        }
        if (!strncmp(args->argv[i], "FAIL=", 5)) {
            for (int t = 0; t < OPENVPN_PLUGIN_N; t++)
                if (hook_name(t) && !strcmp(hook_name(t), args->argv[i] + 5))
                    c->fail_type = t;
            continue;
        }
        if (!strncmp(args->argv[i], "CC_PUSH=", 8)) {
            snprintf(c->push, sizeof(c->push), "%s", args->argv[i] + 8);
            continue;
        }
        if (!strncmp(args->argv[i], "FAIL_TLS_FINAL=", 15)) {
            c->fail_tls_final = atoi(args->argv[i] + 15);
            continue;
        }
        if (!strncmp(args->argv[i], "FAIL_TLS_VERIFY_CN=", 19)) {
            snprintf(c->fail_tls_verify_cn, sizeof(c->fail_tls_verify_cn), "%s",
                     args->argv[i] + 19);
            continue;
        }
        for (int t = 0; t < OPENVPN_PLUGIN_N; t++)
            if (hook_name(t) && !strcmp(hook_name(t), args->argv[i]))
                ret->type_mask |= OPENVPN_PLUGIN_MASK(t);
    }
    ret->handle = (openvpn_plugin_handle_t)c;
    if (c->log_open_close)
        log_line(c, "OPEN", 0);
    return OPENVPN_PLUGIN_FUNC_SUCCESS;
}

/* One line about the certificate of a TLS_VERIFY call, read through
 * libcrypto from the X509 object, then the environment's variables for
 * its depth. Returns whether its CN is `refuse_cn`. */
static int log_certificate(FILE *f, struct openvpn_plugin_args_func_in const *args,
                           const char **envp, const char *refuse_cn)
{
    X509 *cert = args->current_cert;
    int depth = args->current_cert_depth;
    char subject[256] = "", cn[64] = "", name[64];
    char *serial = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (cert) {
        X509_NAME *n = X509_get_subject_name(cert);
        X509_NAME_oneline(n, subject, sizeof(subject));
        X509_NAME_get_text_by_NID(n, NID_commonName, cn, sizeof(cn));
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), NULL);
        if (bn) {
            serial = BN_bn2dec(bn);
            BN_free(bn);
        }
        X509_digest(cert, EVP_sha256(), md, &md_len);
    }
    fprintf(f, "  cert depth=%d object=%s subject=%s serial=%s sha256=", depth,
            cert ? "X509" : "NULL", subject, serial ? serial : "");
    for (unsigned int i = 0; i < md_len; i++)
        fprintf(f, "%s%02X", i ? ":" : "", md[i]);
    OPENSSL_free(serial);
    fprintf(f, "\n ");
    const char *vars[] = { "X509_%d_CN", "tls_id_%d", "tls_serial_%d", "tls_serial_hex_%d",
                           "tls_digest_%d", "tls_digest_sha256_%d", NULL };
    for (int i = 0; vars[i]; i++) {
        snprintf(name, sizeof(name), vars[i], depth);
        fprintf(f, " %s=%s", name, env_get(envp, name));
    }
    fprintf(f, " untrusted_ip=%s peer_cert=%s\n", env_get(envp, "untrusted_ip"),
            env_get(envp, "peer_cert")[0] ? "set" : "");
    return refuse_cn[0] && !strcmp(cn, refuse_cn);
}

OPENVPN_EXPORT int
openvpn_plugin_func_v3(const int version, struct openvpn_plugin_args_func_in const *args,
                       struct openvpn_plugin_args_func_return *ret)
{
    (void)version;
    struct ctx *c = (struct ctx *)args->handle;
    const char **envp = (const char **)args->envp;
    FILE *f = fopen(c->log, "a");
    if (!f)
        return OPENVPN_PLUGIN_FUNC_ERROR;
    fprintf(f, "%s", hook_name(args->type) ? hook_name(args->type) : "?");
    for (int i = 1; args->argv && args->argv[i]; i++)
        fprintf(f, c->quote_args ? " '%s'" : " %s", args->argv[i]);
    fprintf(f, " | ctx=");
    if (args->per_client_context)
        fprintf(f, "#%d", ((struct client *)args->per_client_context)->number);
    else
        fprintf(f, "NULL");
    fprintf(f, " script_type=%s common_name=%s username=%s pool_ip=%s dev=%s\n",
            env_get(envp, "script_type"), env_get(envp, "common_name"),
            env_get(envp, "username"), env_get(envp, "ifconfig_pool_remote_ip"),
            env_get(envp, "dev"));
    if (!strcmp(c->env, "*")) {
        int n = 0;
        while (envp && envp[n])
            n++;
        const char **sorted = calloc(n + 1, sizeof(*sorted));
        if (sorted) {
            memcpy(sorted, envp, n * sizeof(*sorted));
            qsort(sorted, n, sizeof(*sorted), compare_strings);
            for (int i = 0; i < n; i++)
                fprintf(f, "    %s\n", sorted[i]);
            free(sorted);
        }
    } else if (c->env[0]) {
        char names[512];
        snprintf(names, sizeof(names), "%s", c->env);
        for (char *name = strtok(names, ","); name; name = strtok(NULL, ","))
            fprintf(f, "    %s%s%s\n", name, env_has(envp, name) ? "=" : " unset",
                    env_get(envp, name));
    }
    if (args->type == OPENVPN_PLUGIN_TLS_VERIFY) {
        int refuse = log_certificate(f, args, envp, c->fail_tls_verify_cn);
        fclose(f);
        return refuse ? OPENVPN_PLUGIN_FUNC_ERROR : OPENVPN_PLUGIN_FUNC_SUCCESS;
    }
    fclose(f);
    if (args->type == c->fail_type)
        return OPENVPN_PLUGIN_FUNC_ERROR;
    if (args->type == OPENVPN_PLUGIN_TLS_FINAL && ++c->tls_finals == c->fail_tls_final)
        return OPENVPN_PLUGIN_FUNC_ERROR;
    if (args->type == OPENVPN_PLUGIN_CLIENT_CONNECT_V2 && c->push[0] && ret && ret->return_list) {
        struct openvpn_plugin_string_list *l = calloc(1, sizeof(*l));
        char value[128];
        snprintf(value, sizeof(value), "ifconfig-push %s 255.255.255.0\n", c->push);
        l->name = strdup("config");
        l->value = strdup(value);
        *ret->return_list = l;
    }
    return OPENVPN_PLUGIN_FUNC_SUCCESS;
}

OPENVPN_EXPORT void *
openvpn_plugin_client_constructor_v1(openvpn_plugin_handle_t handle)
{
    struct ctx *c = (struct ctx *)handle;
    struct client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return NULL;
    cl->number = ++c->clients_made;
    log_line(c, "CLIENT_CONSTRUCTOR", cl->number);
    return cl;
}

OPENVPN_EXPORT void
openvpn_plugin_client_destructor_v1(openvpn_plugin_handle_t handle, void *per_client_context)
{
    struct client *cl = per_client_context;
    log_line((struct ctx *)handle, "CLIENT_DESTRUCTOR", cl->number);
    free(cl);
}

OPENVPN_EXPORT void
openvpn_plugin_close_v1(openvpn_plugin_handle_t handle)
{
    struct ctx *c = handle;
    if (c->log_open_close)
        log_line(c, "CLOSE", 0);
    free(handle);
}
