/*
 * loadgen: the benchmark suite's load generator (Linux, epoll, one thread).
 *
 * benchmarks/_common.py compiles it with `cc -O2` into a cache directory at benchmark time,
 * so every server is driven by the same C client and the client is not the bottleneck:
 * it reports its own CPU use (getrusage) over the measured window, and the Python driver
 * flags a run where it was close to saturating its core.
 *
 * Modes (one JSON object on stdout at the end; "ready" modes print one more line first):
 *   pingpong  -c CONNS -s SIZE -d SECS [-w WARMUP] [-l FILE]
 *             each connection sends SIZE bytes, waits for all of them to come back (checked
 *             byte for byte), and repeats.  Round-trip times of the measured window go to FILE
 *             as raw float32 microseconds (at most MAX_SAMPLES).
 *   stream    -c CONNS -W WINDOW -d SECS [-w WARMUP]
 *             each connection keeps up to WINDOW bytes in flight (sent and not yet echoed) and
 *             checks one read in eight byte for byte against the pattern it sent.
 *   idle      -c CONNS [-s SIZE] [-i INFLIGHT]
 *             opens CONNS connections (at most INFLIGHT connecting at once) and echoes SIZE
 *             bytes once on each; prints a "ready" line, waits for a line (or EOF) on stdin,
 *             then echoes SIZE bytes on all of them at once, and closes them with RST.
 *   push      -n BYTES [-S STALL]
 *             one connection that never reads: sends up to BYTES, stopping once the server has
 *             taken nothing for STALL seconds; prints "ready", waits for stdin, closes with RST.
 * Every mode is bounded by -t TIMEOUT seconds (default 60).
 * -p PID: also report the CPU time that process (every thread of it) used over the measured
 * window ("server_cpu_s"), read from /proc/PID/task/<tid>/schedstat (nanoseconds; utime+stime
 * ticks from /proc/PID/stat where schedstat is missing), so CPU per operation covers exactly
 * the operations counted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 2000000
#define PATTERN 251 /* a prime, so the pattern never lines up with power-of-two chunks */
#define CHUNK (256 * 1024)

enum { CONNECTING, WAITING, DONE };

typedef struct {
    int fd;
    int state;
    int want_out;     /* EPOLLOUT registered */
    size_t msg_sent;  /* bytes of the current ping handed to the kernel */
    size_t msg_recvd; /* bytes of the current ping echoed back */
    uint64_t sent, recvd;
    double t0;
} conn_t;

static const char *mode;
static const char *host = "127.0.0.1";
static int port, nconns = 1, inflight_max = 1000;
static size_t size = 64, window = 65536, push_total = 200u << 20;
static double duration = 3.0, warmup = 0.5, timeout_s = 60.0, stall_s = 1.0;
static const char *latfile;
static int server_pid; /* -p: whose CPU to read over the measured window, 0 for none */

static unsigned char *pattern; /* PATTERN + CHUNK bytes: byte at stream offset o is pattern[o % PATTERN] */
static unsigned char rbuf[CHUNK];
static conn_t *conns;
static int ep;
static float *samples;
static size_t nsamples;
static long errors, mismatches;

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

/* CPU seconds used so far by every thread of server_pid; -1 if not known (no -p, or gone). */
static double server_cpu(void) {
    if (server_pid <= 0) return -1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", server_pid);
    DIR *d = opendir(path);
    double total = 0;
    int found = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char sp[320];
            snprintf(sp, sizeof sp, "/proc/%d/task/%s/schedstat", server_pid, e->d_name);
            FILE *f = fopen(sp, "r");
            unsigned long long ns;
            if (f && fscanf(f, "%llu", &ns) == 1) {
                total += ns * 1e-9;
                found = 1;
            }
            if (f) fclose(f);
        }
        closedir(d);
    }
    if (found) return total;
    snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void die(const char *what) {
    printf("{\"error\": \"%s: %s\"}\n", what, strerror(errno));
    exit(2);
}

static void set_events(conn_t *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = out;
}

static void start_connect(conn_t *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket (raise the descriptor limit?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        die("connect");
    c->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl add");
    c->want_out = 1;
}

static void close_rst(conn_t *c) {
    /* RST, so 10,000 connections per run leave no TIME_WAIT behind to exhaust ports. */
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
    c->fd = -1;
}

/* Send the rest of the current ping; arm EPOLLOUT only while part of it is unsent. */
static void send_ping(conn_t *c) {
    while (c->msg_sent < size) {
        ssize_t n = send(c->fd, pattern + c->msg_sent, size - c->msg_sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) break;
            errors++;
            c->state = DONE;
            return;
        }
        c->msg_sent += n;
    }
    int out = c->msg_sent < size;
    if (out != c->want_out) set_events(c, out);
}

static void new_ping(conn_t *c) {
    c->msg_sent = c->msg_recvd = 0;
    c->t0 = now();
    send_ping(c);
}

/* Read echoed ping bytes; returns 1 when the whole ping came back. */
static int recv_ping(conn_t *c) {
    ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return 0;
        errors++;
        c->state = DONE;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        return 0;
    }
    if (c->msg_recvd + n > size || memcmp(rbuf, pattern + c->msg_recvd, n) != 0) mismatches++;
    c->msg_recvd += n;
    return c->msg_recvd >= size;
}

static int finish_connect(conn_t *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        errno = err;
        errors++;
        c->state = DONE;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        return 0;
    }
    c->state = WAITING;
    return 1;
}

static void run_pingpong(void) {
    for (int i = 0; i < nconns; i++) start_connect(&conns[i]);
    struct epoll_event evs[1024];
    double t_start = now(), t_measure = t_start + warmup, t_end = t_measure + duration;
    double cpu0 = 0, t0 = 0, scpu0 = -1;
    long rts = 0, measuring = 0;
    for (;;) {
        double t = now();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            cpu0 = cpu_seconds();
            scpu0 = server_cpu();
            t0 = t;
        }
        if (t >= t_end) break;
        int n = epoll_wait(ep, evs, 1024, 10);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == DONE) continue;
            if (c->state == CONNECTING) {
                if (finish_connect(c)) {
                    set_events(c, 0);
                    new_ping(c);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) send_ping(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (recv_ping(c)) {
                    if (measuring) {
                        rts++;
                        if (samples && nsamples < MAX_SAMPLES)
                            samples[nsamples++] = (float)((now() - c->t0) * 1e6);
                    }
                    new_ping(c);
                }
            }
        }
    }
    double wall = now() - t0, cpu = cpu_seconds() - cpu0, scpu = server_cpu();
    scpu = (scpu0 >= 0 && scpu >= 0) ? scpu - scpu0 : -1;
    if (latfile && samples) {
        FILE *f = fopen(latfile, "wb");
        if (f) {
            fwrite(samples, sizeof(float), nsamples, f);
            fclose(f);
        }
    }
    printf("{\"mode\": \"pingpong\", \"conns\": %d, \"size\": %zu, \"round_trips\": %ld, "
           "\"wall\": %.6f, \"per_sec\": %.1f, \"client_cpu\": %.4f, \"errors\": %ld, "
           "\"mismatches\": %ld, \"samples\": %zu, \"server_cpu_s\": %.6f}\n",
           nconns, size, rts, wall, rts / wall, cpu / wall, errors, mismatches, nsamples, scpu);
}

/* Stream: keep up to `window` bytes in flight on each connection. */
static void stream_send(conn_t *c) {
    while (c->sent - c->recvd < window) {
        size_t room = window - (size_t)(c->sent - c->recvd);
        if (room > CHUNK) room = CHUNK;
        ssize_t n = send(c->fd, pattern + c->sent % PATTERN, room, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN) {
                errors++;
                c->state = DONE;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                return;
            }
            if (!c->want_out) set_events(c, 1);
            return;
        }
        c->sent += n;
    }
    if (c->want_out) set_events(c, 0);
}

static void run_stream(void) {
    for (int i = 0; i < nconns; i++) start_connect(&conns[i]);
    struct epoll_event evs[1024];
    double t_start = now(), t_measure = t_start + warmup, t_end = t_measure + duration;
    double cpu0 = 0, t0 = 0, scpu0 = -1;
    uint64_t base = 0, total = 0;
    int measuring = 0;
    for (;;) {
        double t = now();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            cpu0 = cpu_seconds();
            scpu0 = server_cpu();
            t0 = t;
            for (int i = 0; i < nconns; i++) base += conns[i].recvd;
        }
        if (t >= t_end) break;
        int n = epoll_wait(ep, evs, 1024, 10);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == DONE) continue;
            if (c->state == CONNECTING) {
                if (finish_connect(c)) stream_send(c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                /* Check one read in 8 byte for byte; let the kernel discard the others
                 * (MSG_TRUNC on TCP: no copy), so checking does not make us the bottleneck. */
                int check = (++c->msg_recvd & 7) == 0;
                ssize_t r = recv(c->fd, rbuf, sizeof rbuf, check ? 0 : MSG_TRUNC);
                if (r <= 0) {
                    if (!(r < 0 && errno == EAGAIN)) {
                        errors++;
                        c->state = DONE;
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    }
                    continue;
                }
                if (check && memcmp(rbuf, pattern + c->recvd % PATTERN, r) != 0) mismatches++;
                c->recvd += r;
            }
            if (c->state != DONE) stream_send(c);
        }
    }
    double wall = now() - t0, cpu = cpu_seconds() - cpu0, scpu = server_cpu();
    scpu = (scpu0 >= 0 && scpu >= 0) ? scpu - scpu0 : -1;
    for (int i = 0; i < nconns; i++) total += conns[i].recvd;
    total -= base;
    printf("{\"mode\": \"stream\", \"conns\": %d, \"window\": %zu, \"bytes\": %llu, "
           "\"wall\": %.6f, \"mb_per_sec\": %.2f, \"client_cpu\": %.4f, \"errors\": %ld, "
           "\"mismatches\": %ld, \"server_cpu_s\": %.6f}\n",
           nconns, window, (unsigned long long)total, wall, total / wall / 1e6, cpu / wall,
           errors, mismatches, scpu);
}

static void wait_stdin(void) {
    char line[64];
    ssize_t r;
    do r = read(0, line, sizeof line);
    while (r < 0 && errno == EINTR);
}

/* One echo of `size` bytes on every connection in [0, nconns); connects first if needed. */
static double echo_round(int connect_first, double deadline, long *done_out) {
    struct epoll_event evs[1024];
    double t0 = now(), cpu0 = cpu_seconds();
    int next = 0, pending = 0;
    long done = 0;
    if (!connect_first) {
        for (int i = 0; i < nconns; i++) {
            if (conns[i].state == DONE && conns[i].fd >= 0 && conns[i].msg_recvd >= size) {
                conns[i].state = WAITING;
                new_ping(&conns[i]);
                pending++;
            }
        }
        next = nconns;
    }
    while (done + errors < nconns) {
        while (connect_first && next < nconns && pending < inflight_max) {
            start_connect(&conns[next++]);
            pending++;
        }
        if (now() > deadline) break;
        int n = epoll_wait(ep, evs, 1024, 100);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == DONE) continue;
            if (c->state == CONNECTING) {
                if (finish_connect(c)) {
                    set_events(c, 0);
                    new_ping(c);
                } else {
                    pending--;
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) send_ping(c);
            if (c->state != DONE && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                if (recv_ping(c)) {
                    c->state = DONE;
                    done++;
                    pending--;
                } else if (c->state == DONE) {
                    pending--;
                }
            }
        }
    }
    (void)cpu0;
    *done_out = done;
    return now() - t0;
}

static void run_idle(void) {
    double deadline = now() + timeout_s;
    double cpu0 = cpu_seconds(), scpu0 = server_cpu();
    long done1 = 0, done2 = 0;
    double t1 = echo_round(1, deadline, &done1);
    double cpu1 = cpu_seconds() - cpu0, scpu1 = server_cpu();
    scpu1 = (scpu0 >= 0 && scpu1 >= 0) ? scpu1 - scpu0 : -1;
    printf("{\"phase\": \"ready\", \"conns\": %d, \"connected\": %ld, \"connect_wall\": %.6f, "
           "\"accept_rate\": %.1f, \"errors\": %ld, \"timed_out\": %s, \"server_cpu_s\": %.6f}\n",
           nconns, done1, t1, done1 / t1, errors, done1 + errors < nconns ? "true" : "false",
           scpu1);
    fflush(stdout);
    wait_stdin();
    double cpu2 = cpu_seconds();
    double t2 = echo_round(0, now() + timeout_s, &done2);
    cpu2 = cpu_seconds() - cpu2;
    for (int i = 0; i < nconns; i++)
        if (conns[i].fd >= 0) close_rst(&conns[i]);
    printf("{\"mode\": \"idle\", \"conns\": %d, \"connected\": %ld, \"connect_wall\": %.6f, "
           "\"accept_rate\": %.1f, \"connect_client_cpu\": %.4f, \"echoed_all\": %ld, "
           "\"echo_all_wall\": %.6f, \"echo_all_client_cpu\": %.4f, \"errors\": %ld, "
           "\"mismatches\": %ld, \"accept_server_cpu_s\": %.6f}\n",
           nconns, done1, t1, done1 / t1, cpu1 / t1, done2, t2, t2 > 0 ? cpu2 / t2 : 0.0,
           errors, mismatches, scpu1);
}

static void run_push(void) {
    conn_t *c = &conns[0];
    start_connect(c);
    struct epoll_event ev;
    double deadline = now() + timeout_s, t0 = now();
    if (epoll_wait(ep, &ev, 1, (int)(timeout_s * 1000)) != 1 || !finish_connect(c)) die("connect");
    set_events(c, 1);
    int stalled = 0;
    while (c->sent < push_total && now() < deadline) {
        size_t len = push_total - c->sent;
        if (len > CHUNK) len = CHUNK;
        ssize_t n = send(c->fd, pattern + c->sent % PATTERN, len, MSG_NOSIGNAL);
        if (n >= 0) {
            c->sent += n;
            continue;
        }
        if (errno != EAGAIN) {
            errors++;
            break;
        }
        /* Wait for room; the server stopped taking data if none comes within stall_s. */
        int r = epoll_wait(ep, &ev, 1, (int)(stall_s * 1000));
        if (r == 0) {
            stalled = 1;
            break;
        }
    }
    double wall = now() - t0;
    printf("{\"phase\": \"ready\", \"pushed\": %llu, \"stalled\": %s, \"wall\": %.6f}\n",
           (unsigned long long)c->sent, stalled ? "true" : "false", wall);
    fflush(stdout);
    wait_stdin();
    close_rst(c);
    printf("{\"mode\": \"push\", \"pushed\": %llu, \"stalled\": %s, \"wall\": %.6f, "
           "\"errors\": %ld}\n",
           (unsigned long long)c->sent, stalled ? "true" : "false", wall, errors);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: loadgen MODE HOST PORT [options]\n");
        return 2;
    }
    mode = argv[1];
    host = argv[2];
    port = atoi(argv[3]);
    int opt;
    optind = 4;
    while ((opt = getopt(argc, argv, "c:s:d:w:W:l:i:n:S:t:p:")) != -1) {
        switch (opt) {
        case 'c': nconns = atoi(optarg); break;
        case 's': size = strtoul(optarg, NULL, 10); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'W': window = strtoul(optarg, NULL, 10); break;
        case 'l': latfile = optarg; break;
        case 'i': inflight_max = atoi(optarg); break;
        case 'n': push_total = strtoull(optarg, NULL, 10); break;
        case 'S': stall_s = atof(optarg); break;
        case 't': timeout_s = atof(optarg); break;
        case 'p': server_pid = atoi(optarg); break;
        default: return 2;
        }
    }
    /* Raise our own descriptor limit as far as the hard limit allows. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)nconns + 16 > rl.rlim_cur) {
        printf("{\"error\": \"%d connections need more descriptors than the hard limit %llu\"}\n",
               nconns, (unsigned long long)rl.rlim_cur);
        return 3;
    }
    if (size > CHUNK) size = CHUNK;
    pattern = malloc(PATTERN + CHUNK);
    for (size_t i = 0; i < PATTERN + CHUNK; i++) pattern[i] = (unsigned char)((i % PATTERN) * 7 + 1);
    conns = calloc(nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) conns[i].fd = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (latfile) samples = malloc(sizeof(float) * MAX_SAMPLES);
    if (!strcmp(mode, "pingpong")) run_pingpong();
    else if (!strcmp(mode, "stream")) run_stream();
    else if (!strcmp(mode, "idle")) run_idle();
    else if (!strcmp(mode, "push")) { nconns = 1; run_push(); }
    else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    fflush(stdout);
    return 0;
}
