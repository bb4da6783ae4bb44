/*
 * tlsload: the TLS benchmark's load generator (Linux, epoll, OpenSSL, one thread).
 *
 * benchmarks/tls.py compiles it with `cc -O2 ... -lssl -lcrypto` into a cache directory, so
 * both TLS servers are driven by the same C client, many connections at once, and the server
 * rather than the client is the bottleneck.  It reports its own CPU use (getrusage) over the
 * measured window; the Python driver flags a run where it was close to saturating its core.
 *
 * Modes (one JSON object on stdout at the end):
 *   handshake -c CONNS -d SECS [-w WARMUP]
 *             CONNS connections at once, each in a loop: TCP connect, full TLS handshake (no
 *             session is ever offered for resumption), send close_notify, read until the
 *             server's close_notify or EOF, close.  Counts completed cycles.
 *   stream    -c CONNS -W WINDOW -d SECS [-w WARMUP]
 *             CONNS TLS connections; each keeps up to WINDOW bytes in flight (sent, not yet
 *             echoed) and checks one read in eight byte for byte against what it sent.
 * Common: -t TIMEOUT (default 60) bounds the run; -H NAME is the SNI name (default localhost).
 * The server's certificate chain is not verified (SSL_CTX_set_cert_verify_callback accepts
 * it), to keep the client's CPU down: the server does the same work either way, and the
 * driver verifies each server's certificate once with Python's ssl before measuring.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PATTERN 251
#define CHUNK (64 * 1024)

enum { CONNECTING, HANDSHAKE, CLOSING, STREAM };

typedef struct {
    int fd, state, want_out, nreads;
    SSL *ssl;
    unsigned long long sent, recvd;
} conn_t;

static const char *host = "127.0.0.1", *sni = "localhost", *mode;
static int port, nconns = 16, handshake_mode, measuring;
static size_t window = 256 * 1024;
static double duration = 3.0, warmup = 0.5, timeout_s = 60.0;
static SSL_CTX *ctx;
static int ep;
static unsigned char *pattern, rbuf[CHUNK];
static long long cycles, handshakes, resumed, errors, mismatches, measured_bytes;
static char version[32], cipher[64], group[32], peer_key[32];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *what) {
    unsigned long e = ERR_get_error();
    printf("{\"error\": \"%s: %s%s%s\"}\n", what, strerror(errno), e ? " / " : "",
           e ? ERR_reason_error_string(e) : "");
    exit(2);
}

static int accept_any(X509_STORE_CTX *store, void *arg) {
    (void)store;
    (void)arg;
    return 1;
}

static void set_events(conn_t *c, int out) {
    if (out == c->want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = out;
}

static void start_connect(conn_t *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        die("connect");
    c->ssl = SSL_new(ctx);
    if (!c->ssl) die("SSL_new");
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, sni);
    SSL_set_connect_state(c->ssl);
    c->state = CONNECTING;
    c->sent = c->recvd = 0;
    c->nreads = 0;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add");
    c->want_out = 1;
}

static void finish_conn(conn_t *c, int failed) {
    if (failed) errors++;
    SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd); /* removes it from the epoll set */
    c->fd = -1;
}

/* Note what was negotiated (once): the driver prints it for both servers. */
static void note_session(SSL *ssl) {
    if (version[0]) return;
    snprintf(version, sizeof version, "%s", SSL_get_version(ssl));
    snprintf(cipher, sizeof cipher, "%s", SSL_get_cipher_name(ssl));
    int nid = SSL_get_negotiated_group(ssl);
    const char *name = nid ? OBJ_nid2sn(nid & ~TLSEXT_nid_unknown) : NULL;
    snprintf(group, sizeof group, "%s", name ? name : "?");
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (cert) {
        EVP_PKEY *key = X509_get0_pubkey(cert);
        if (key)
            snprintf(peer_key, sizeof peer_key, "%s-%d",
                     EVP_PKEY_get_base_id(key) == EVP_PKEY_EC ? "EC" : OBJ_nid2sn(EVP_PKEY_get_base_id(key)),
                     EVP_PKEY_get_bits(key));
        X509_free(cert);
    }
}

/* Returns 1 when the operation must wait (events set), 0 to go on, -1 on failure. */
static int wait_for(conn_t *c, int ret) {
    int err = SSL_get_error(c->ssl, ret);
    if (err == SSL_ERROR_WANT_READ) {
        set_events(c, 0);
        return 1;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        set_events(c, 1);
        return 1;
    }
    return -1;
}

static void stream_io(conn_t *c) {
    for (;;) { /* read every record the kernel holds */
        int n = SSL_read(c->ssl, rbuf, sizeof rbuf);
        if (n <= 0) {
            int w = wait_for(c, n);
            if (w < 0) {
                printf("{\"error\": \"stream connection lost\"}\n");
                exit(2);
            }
            break;
        }
        if ((c->nreads++ & 7) == 0) {
            if (memcmp(rbuf, pattern + c->recvd % PATTERN, (size_t)n) != 0) mismatches++;
        }
        c->recvd += (unsigned long long)n;
        if (measuring) measured_bytes += n;
    }
    int out = 0;
    while (c->sent - c->recvd < window) {
        size_t want = window - (size_t)(c->sent - c->recvd);
        if (want > CHUNK) want = CHUNK;
        int n = SSL_write(c->ssl, pattern + c->sent % PATTERN, (int)want);
        if (n <= 0) {
            int err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_WRITE) {
                out = 1;
                break;
            }
            if (err == SSL_ERROR_WANT_READ) break;
            printf("{\"error\": \"stream write failed\"}\n");
            exit(2);
        }
        c->sent += (unsigned long long)n;
    }
    set_events(c, out);
}

static void handle(conn_t *c, unsigned events) {
    int r;
    switch (c->state) {
    case CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            errno = err;
            die("connect");
        }
        c->state = HANDSHAKE;
    } /* fall through */
    case HANDSHAKE:
        r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            if (wait_for(c, r) < 0) {
                finish_conn(c, 1);
                start_connect(c);
            }
            return;
        }
        if (measuring) handshakes++;
        if (SSL_session_reused(c->ssl)) resumed++;
        note_session(c->ssl);
        if (!handshake_mode) {
            c->state = STREAM;
            stream_io(c);
            return;
        }
        SSL_shutdown(c->ssl); /* sends close_notify; the answer is read below */
        c->state = CLOSING;
        /* fall through */
    case CLOSING:
        for (;;) {
            r = SSL_read(c->ssl, rbuf, sizeof rbuf);
            if (r > 0) continue;
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ) {
                set_events(c, 0);
                return;
            }
            if (err == SSL_ERROR_WANT_WRITE) {
                set_events(c, 1);
                return;
            }
            /* The server's close_notify (ZERO_RETURN) or its FIN: the cycle is complete. */
            if (measuring) cycles++;
            finish_conn(c, err != SSL_ERROR_ZERO_RETURN && err != SSL_ERROR_SYSCALL &&
                               err != SSL_ERROR_SSL);
            start_connect(c);
            return;
        }
    case STREAM:
        (void)events;
        stream_io(c);
        return;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: tlsload handshake|stream HOST PORT [options]\n");
        return 2;
    }
    mode = argv[1];
    host = argv[2];
    port = atoi(argv[3]);
    handshake_mode = strcmp(mode, "handshake") == 0;
    if (!handshake_mode && strcmp(mode, "stream") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    int opt;
    optind = 4;
    while ((opt = getopt(argc, argv, "c:W:d:w:t:H:")) != -1) {
        switch (opt) {
        case 'c': nconns = atoi(optarg); break;
        case 'W': window = (size_t)atol(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 't': timeout_s = atof(optarg); break;
        case 'H': sni = optarg; break;
        default: return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) die("SSL_CTX_new");
    SSL_CTX_set_cert_verify_callback(ctx, accept_any, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    pattern = malloc(PATTERN + CHUNK);
    for (size_t i = 0; i < PATTERN + CHUNK; i++) pattern[i] = (unsigned char)(i % PATTERN);
    ep = epoll_create1(EPOLL_CLOEXEC);
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) start_connect(&conns[i]);

    double t0 = now(), t_measure = t0 + warmup, t_end = t_measure + duration, cpu0 = 0, tm = 0;
    struct epoll_event evs[256];
    for (;;) {
        double t = now();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            cpu0 = cpu_seconds();
            tm = t;
        }
        if (t >= t_end) break;
        if (t - t0 > timeout_s) {
            printf("{\"error\": \"timed out after %.0fs\"}\n", timeout_s);
            return 2;
        }
        int n = epoll_wait(ep, evs, 256, 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) handle(evs[i].data.ptr, evs[i].events);
    }
    double wall = now() - tm, cpu = cpu_seconds() - cpu0;
    printf("{\"mode\": \"%s\", \"conns\": %d, \"seconds\": %.4f, \"cpu\": %.4f, "
           "\"handshakes\": %lld, \"cycles\": %lld, \"resumed\": %lld, \"errors\": %lld, "
           "\"bytes\": %lld, \"mismatches\": %lld, \"version\": \"%s\", \"cipher\": \"%s\", "
           "\"group\": \"%s\", \"peer_key\": \"%s\"}\n",
           mode, nconns, wall, cpu, handshakes, cycles, resumed, errors, measured_bytes,
           mismatches, version, cipher, group, peer_key);
    return 0;
}
