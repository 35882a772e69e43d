/* The control connection of a data-parallel run (see dist.h).
 *
 * Rank 0 listens on MASTER_ADDR's host at DDPM_CONTROL_PORT, else MASTER_PORT + 1
 * (torchrun's own store holds MASTER_PORT), else, under MPI, on a free port that MPI
 * sends to the others. Every other rank connects and sends its rank. The connection
 * then carries:
 *   - rank 0's bytes to everyone (NCCL's unique id when there is no MPI);
 *   - BYE ('B') when a rank finishes normally, ABORT ('A' + rank) from rank 0 when a
 *     rank went away without BYE.
 * A watcher thread on each rank reads it: a peer gone without BYE, or a collective
 * that outlasts the deadline, ends the process with status 4 and a message naming the
 * rank, instead of leaving it blocked in MPI or NCCL forever. Checkpoints are written
 * atomically, so the last one stays whole whatever moment this happens at. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist.h"
#include "util.h"

enum { MSG_BYE = 'B', MSG_ABORT = 'A' };
enum { EXIT_PEER_FAILED = 4 };

typedef struct {
    int *fds;                  /* rank 0: (world_size) one per peer, -1 for itself */
    int *said_bye;             /* rank 0: (world_size) */
    int wake[2];               /* a pipe that wakes the watcher to stop */
    pthread_t thread;
    int watching;
    _Atomic double collective_since;   /* 0 when no collective is running */
    const char *_Atomic collective_what;
    int rank0_said_bye;
} Control;

static Control control = {.wake = {-1, -1}};

/* ---------------- plain socket I/O ---------------- */

static int write_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size > 0) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *data, size_t size) {
    char *p = data;
    while (size > 0) {
        ssize_t n = recv(fd, p, size, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

/* ---------------- where rank 0 listens ---------------- */

static int control_port(const DistEnv *env) {
    const char *port = getenv("DDPM_CONTROL_PORT");
    if (port && *port) return atoi(port);
    return env->master_port ? env->master_port + 1 : 0;
}

static int listen_on(int port, int *bound_port, char *err, size_t err_size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof addr;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        snprintf(err, err_size, "rank 0 cannot listen on TCP port %d: %s (set DDPM_CONTROL_PORT "
                 "to a free port)", port, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    *bound_port = ntohs(addr.sin_port);
    return fd;
}

/* Rank 0's IPv4 addresses, space-separated, loopback last: a container's host name often
 * does not resolve, so under MPI rank 0 sends addresses, as NCCL's bootstrap does. */
static void local_addresses(char *out, size_t size) {
    struct ifaddrs *list;
    size_t used = 0;
    out[0] = 0;
    if (getifaddrs(&list) != 0) return;
    for (int loopback = 0; loopback < 2; loopback++)
        for (struct ifaddrs *i = list; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
                !(i->ifa_flags & IFF_LOOPBACK) != !loopback)
                continue;
            char text[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text, sizeof text);
            int n = snprintf(out + used, size - used, "%s%s", used ? " " : "", text);
            if (n < 0 || (size_t)n >= size - used) break;
            used += (size_t)n;
        }
    freeifaddrs(list);
}

/* Where the others find rank 0: MASTER_ADDR, or rank 0's addresses sent over MPI. hosts
 * gets one or more space-separated names or addresses to try. */
static int share_address(Dist *d, int port, char *hosts, size_t hosts_size, int *out_port,
                         char *err, size_t err_size) {
    char text[1024] = "";
    if (d->env.master_addr[0]) {
        snprintf(hosts, hosts_size, "%s", d->env.master_addr);
        *out_port = port;
        return 0;
    }
    if (!d->ops.broadcast_bytes) {
        snprintf(err, err_size, "set MASTER_ADDR and MASTER_PORT (rank 0's host and a free "
                 "port): %s starts no MPI to find rank 0", d->env.launcher);
        return -1;
    }
    if (d->env.rank == 0) {
        char addresses[960];
        local_addresses(addresses, sizeof addresses);
        snprintf(text, sizeof text, "%d %s", port, addresses[0] ? addresses : "127.0.0.1");
    }
    d->ops.broadcast_bytes(d, text, sizeof text);
    int skip = 0;
    if (sscanf(text, "%d %n", out_port, &skip) != 1 || !text[skip]) {
        snprintf(err, err_size, "rank 0's address did not arrive over MPI");
        return -1;
    }
    snprintf(hosts, hosts_size, "%s", text + skip);
    return 0;
}

/* ---------------- connecting ---------------- */

static int accept_peers(Dist *d, int listener, char *err, size_t err_size) {
    const int world = d->env.world_size;
    const double deadline = now_seconds() + d->timeout_s;
    for (int joined = 1; joined < world;) {
        struct pollfd p = {.fd = listener, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0) {
            if (now_seconds() < deadline) continue;
            snprintf(err, err_size, "only %d of %d ranks connected to rank 0 within %.0f s",
                     joined, world, d->timeout_s);
            return -1;
        }
        int fd = accept(listener, NULL, NULL);
        int32_t rank = -1;
        if (fd < 0 || read_all(fd, &rank, sizeof rank) != 0 || rank <= 0 || rank >= world ||
            control.fds[rank] >= 0) {
            if (fd >= 0) close(fd);
            continue;
        }
        control.fds[rank] = fd;
        joined++;
    }
    return 0;
}

/* Returns a connected socket, -1 when nothing listens yet, or -2 (err filled) when the
 * host name does not resolve: waiting would not help. */
static int connect_once(const char *host, int port, char *err, size_t err_size) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *found;
    int rc = getaddrinfo(host, service, &hints, &found);
    if (rc == EAI_NONAME || rc == EAI_FAIL || rc == EAI_NODATA) {
        snprintf(err, err_size, "rank 0's host '%s' does not resolve: %s", host, gai_strerror(rc));
        return -2;
    }
    if (rc != 0) return -1;
    int fd = socket(found->ai_family, found->ai_socktype, 0);
    if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(found);
    return fd;
}

/* One round over the space-separated hosts; the first that answers wins. */
static int connect_any(const char *hosts, int port, char *err, size_t err_size) {
    char copy[1024], *save = NULL;
    snprintf(copy, sizeof copy, "%s", hosts);
    int fd = -1;
    for (char *host = strtok_r(copy, " ", &save); host && fd == -1;
         host = strtok_r(NULL, " ", &save))
        fd = connect_once(host, port, err, err_size);
    return fd;
}

static int connect_to_rank0(Dist *d, const char *hosts, int port, char *err, size_t err_size) {
    const double deadline = now_seconds() + d->timeout_s;
    int fd;
    while ((fd = connect_any(hosts, port, err, err_size)) < 0) {
        if (fd == -2) return -1;
        if (now_seconds() > deadline) {
            snprintf(err, err_size, "cannot reach rank 0 at %s (port %d) within %.0f s", hosts,
                     port, d->timeout_s);
            return -1;
        }
        usleep(100 * 1000);
    }
    int32_t rank = d->env.rank;
    if (write_all(fd, &rank, sizeof rank) != 0) {
        snprintf(err, err_size, "lost rank 0 at %s (port %d) while joining", hosts, port);
        close(fd);
        return -1;
    }
    return fd;
}

int dist_control_start(Dist *d, char *err, size_t err_size) {
    const int world = d->env.world_size;
    int listener = -1, port = control_port(&d->env), shared_port;
    char host[1024];
    if (d->env.rank == 0 && (listener = listen_on(port, &port, err, err_size)) < 0) return -1;
    if (share_address(d, port, host, sizeof host, &shared_port, err, err_size) != 0) return -1;
    if (d->env.rank != 0) {
        d->control_fd = connect_to_rank0(d, host, shared_port, err, err_size);
        return d->control_fd < 0 ? -1 : 0;
    }
    control.fds = xmalloc((size_t)world * sizeof(int));
    control.said_bye = xcalloc((size_t)world, sizeof(int));
    for (int r = 0; r < world; r++) control.fds[r] = -1;
    int rc = accept_peers(d, listener, err, err_size);
    close(listener);
    d->control_fd = 0;   /* rank 0 holds control.fds instead */
    return rc;
}

void dist_control_broadcast(Dist *d, void *bytes, size_t size) {
    if (d->env.rank != 0) {
        if (read_all(d->control_fd, bytes, size) != 0) die("lost rank 0 during start-up");
        return;
    }
    for (int r = 1; r < d->env.world_size; r++)
        if (write_all(control.fds[r], bytes, size) != 0) die("lost rank %d during start-up", r);
}

/* ---------------- the watcher ---------------- */

static void stop_now(Dist *d, const char *why) {
    fprintf(stderr, "ddpm: rank %d: %s; stopping (the last checkpoint is kept)\n", d->env.rank,
            why);
    fflush(stderr);
    if (d->ops.abort) d->ops.abort(d);
    _exit(EXIT_PEER_FAILED);
}

static void stop_for_rank(Dist *d, int failed) {
    char why[160];
    snprintf(why, sizeof why, "rank %d ended without finishing (its process died, or its host "
             "is unreachable)", failed);
    stop_now(d, why);
}

static void check_deadline(Dist *d) {
    double since = atomic_load(&control.collective_since);
    if (since > 0 && now_seconds() - since > d->timeout_s) {
        char why[256];
        snprintf(why, sizeof why, "%s did not finish within %.0f s (dist_timeout): a rank is "
                 "stuck or gone", atomic_load(&control.collective_what), d->timeout_s);
        stop_now(d, why);
    }
}

/* Rank 0: a peer that went away without BYE is reported to all the others. */
static void rank0_peer_event(Dist *d, int rank) {
    char msg;
    if (read_all(control.fds[rank], &msg, 1) == 0 && msg == MSG_BYE) {
        control.said_bye[rank] = 1;
        return;
    }
    close(control.fds[rank]);
    control.fds[rank] = -1;
    if (control.said_bye[rank]) return;
    char abort_msg[5] = {MSG_ABORT};
    int32_t failed = rank;
    memcpy(abort_msg + 1, &failed, sizeof failed);
    for (int r = 1; r < d->env.world_size; r++)
        if (control.fds[r] >= 0) write_all(control.fds[r], abort_msg, sizeof abort_msg);
    stop_for_rank(d, rank);
}

static void peer_rank0_event(Dist *d) {
    char msg;
    int32_t failed;
    if (read_all(d->control_fd, &msg, 1) != 0) {
        if (control.rank0_said_bye) {   /* rank 0 finished and closed: nothing to watch */
            close(d->control_fd);
            d->control_fd = -1;
            return;
        }
        stop_for_rank(d, 0);
    }
    if (msg == MSG_BYE) control.rank0_said_bye = 1;
    if (msg == MSG_ABORT && read_all(d->control_fd, &failed, sizeof failed) == 0)
        stop_for_rank(d, failed);
}

static void *watch(void *arg) {
    Dist *d = arg;
    const int world = d->env.world_size;
    struct pollfd *p = xmalloc((size_t)(world + 1) * sizeof *p);
    for (;;) {
        int n = 0;
        p[n++] = (struct pollfd){.fd = control.wake[0], .events = POLLIN};
        if (d->env.rank == 0) {
            for (int r = 1; r < world; r++)
                p[n++] = (struct pollfd){.fd = control.fds[r], .events = POLLIN};
        } else {
            p[n++] = (struct pollfd){.fd = d->control_fd, .events = POLLIN};
        }
        if (poll(p, (nfds_t)n, 1000) > 0) {
            if (p[0].revents) break;
            for (int i = 1; i < n; i++) {
                if (!p[i].revents || p[i].fd < 0) continue;
                if (d->env.rank == 0) rank0_peer_event(d, i);
                else peer_rank0_event(d);
            }
        }
        check_deadline(d);
    }
    free(p);
    return NULL;
}

static void start_watching(Dist *d) {
    if (pipe(control.wake) != 0) die("pipe: %s", strerror(errno));
    if (pthread_create(&control.thread, NULL, watch, d) != 0) die("cannot start the rank watcher");
    control.watching = 1;
}

void dist_collective_begin(Dist *d, const char *what) {
    if (!control.watching && d->env.world_size > 1 && d->control_fd >= 0) start_watching(d);
    atomic_store(&control.collective_what, what);
    atomic_store(&control.collective_since, now_seconds());
}

void dist_collective_end(Dist *d) {
    (void)d;
    atomic_store(&control.collective_since, 0.0);
}

/* BYE to the other end(s), then the watcher stops and the sockets close. */
void dist_control_stop(Dist *d) {
    const char bye = MSG_BYE;
    if (d->env.rank == 0) {
        for (int r = 1; r < d->env.world_size; r++)
            if (control.fds[r] >= 0) write_all(control.fds[r], &bye, 1);
    } else if (d->control_fd >= 0) {
        write_all(d->control_fd, &bye, 1);
    }
    if (control.watching) {
        if (write(control.wake[1], &bye, 1) != 1) warn("cannot stop the rank watcher");
        pthread_join(control.thread, NULL);
        close(control.wake[0]);
        close(control.wake[1]);
        control.watching = 0;
    }
    if (d->env.rank == 0) {
        for (int r = 1; r < d->env.world_size; r++)
            if (control.fds[r] >= 0) close(control.fds[r]);
        free(control.fds);
        free(control.said_bye);
    } else if (d->control_fd >= 0) {
        close(d->control_fd);
    }
    d->control_fd = -1;
}
