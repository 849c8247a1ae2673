/* SPDX-License-Identifier: Apache-2.0 */
/* Connectivity checks from the source side: TCP port matrix and name resolution. */
#include "migrate-internal.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *port_role(uint16_t p)
{
	switch (p) {
	case 443: return "key/attestation service";
	case 9443: return "replication";
	case 22: return "SSH";
	case 5985: return "WinRM";
	default: return "custom";
	}
}

/* Non-blocking connect bounded by the timeout; 0 connected, else a positive errno. */
static int try_connect(const struct addrinfo *a, unsigned timeout_ms)
{
	int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
	if (fd < 0)
		return errno;
	int e = 0;
	if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
		e = errno;
		if (e == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int r = poll(&p, 1, (int)timeout_ms);
			socklen_t l = sizeof(e);
			if (r == 0)
				e = ETIMEDOUT;
			else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
				e = errno;
		}
	}
	close(fd);
	return e;
}

static void addr_text(const struct addrinfo *a, char *out, size_t len)
{
	const void *p = a->ai_family == AF_INET6 ?
		(const void *)&((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr :
		(const void *)&((const struct sockaddr_in *)a->ai_addr)->sin_addr;
	if (!inet_ntop(a->ai_family, p, out, (socklen_t)len))
		snprintf(out, len, "?");
}

int cvm_migrate_check_network(const char *host, const uint16_t *ports, size_t nports,
			      const char *const *names, size_t nnames, unsigned timeout_ms,
			      struct cvm_netcheck **out, size_t *n, struct cvm_err *err)
{
	if (!host || !host[0] || (nports && !ports) || (nnames && !names) || !out || !n)
		return cvm_err_badparam(err, "check-network: target host is required");
	if (timeout_ms == 0 || timeout_ms > 60000)
		return cvm_err_badparam(err, "timeout: expected 1..60000 ms");
	struct cvm_netcheck *v = calloc(nports + nnames + 1, sizeof(*v));
	if (!v)
		return cvm_err_nomem(err);
	size_t k = 0;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	int g = getaddrinfo(host, NULL, &hints, &ai);
	for (size_t i = 0; i < nports; i++) {
		struct cvm_netcheck *c = &v[k++];
		snprintf(c->check, sizeof(c->check), "tcp %s:%u (%s)", host, ports[i], port_role(ports[i]));
		if (g) {
			snprintf(c->detail, sizeof(c->detail), "cannot resolve %s: %s", host, gai_strerror(g));
			continue;
		}
		uint64_t t0 = cvm_monotonic_ns();
		int e = ECONNREFUSED;
		for (struct addrinfo *a = ai; a && e; a = a->ai_next) {
			if (a->ai_family == AF_INET)
				((struct sockaddr_in *)a->ai_addr)->sin_port = htons(ports[i]);
			else if (a->ai_family == AF_INET6)
				((struct sockaddr_in6 *)a->ai_addr)->sin6_port = htons(ports[i]);
			else
				continue;
			e = try_connect(a, timeout_ms);
		}
		c->ms = (cvm_monotonic_ns() - t0) / 1000000;
		c->ok = e == 0;
		if (e == 0)
			snprintf(c->detail, sizeof(c->detail), "connected in %llu ms", (unsigned long long)c->ms);
		else if (e == ETIMEDOUT)
			snprintf(c->detail, sizeof(c->detail), "timed out after %u ms (filtered?)", timeout_ms);
		else
			snprintf(c->detail, sizeof(c->detail), "%s", e == ECONNREFUSED ? "refused (nothing listening)" :
				 strerror(e));
	}
	if (ai)
		freeaddrinfo(ai);
	for (size_t i = 0; i < nnames; i++) {
		struct cvm_netcheck *c = &v[k++];
		snprintf(c->check, sizeof(c->check), "dns %s", names[i]);
		struct addrinfo *r = NULL;
		uint64_t t0 = cvm_monotonic_ns();
		int e = getaddrinfo(names[i], NULL, &hints, &r);
		c->ms = (cvm_monotonic_ns() - t0) / 1000000;
		if (e) {
			snprintf(c->detail, sizeof(c->detail), "%s", gai_strerror(e));
			continue;
		}
		c->ok = true;
		size_t o = 0;
		for (struct addrinfo *a = r; a && o + 48 < sizeof(c->detail); a = a->ai_next) {
			char t[INET6_ADDRSTRLEN];
			addr_text(a, t, sizeof(t));
			if (!strstr(c->detail, t))
				o += (size_t)snprintf(c->detail + o, sizeof(c->detail) - o, "%s%s", o ? " " : "", t);
		}
		freeaddrinfo(r);
	}
	*out = v;
	*n = k;
	return 0;
}
