/* SPDX-License-Identifier: Apache-2.0 */
/* HTTPS keep-alive load client for the key service benchmarks.
 *
 * bench-hsm-load URL BODIES_FILE|cycle:BODIES_FILE|- TOKEN_FILE CA_FILE THREADS SECONDS
 *
 * Each thread keeps one connection (libcurl easy handle reused: TLS session and TCP connection
 * stay up) and POSTs (GET when BODIES_FILE is "-") as fast as it can for SECONDS. Bodies are
 * taken round-robin from BODIES_FILE (one per line; every release needs a fresh attestation
 * token, so the release benchmark gives one body per request and stops when they run out;
 * "cycle:" reuses the bodies round-robin). A response other than 200 counts
 * as an error. Prints: requests=N errors=E seconds=S rps=R */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

struct shared {
	const char *url;
	char **bodies;
	size_t nbodies;
	bool cycle;
	atomic_size_t next;
	const char *auth;
	const char *ca;
	double seconds;
	atomic_long requests, errors;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
	(void)p;
	(void)ud;
	return size * n;
}

static void *worker(void *arg)
{
	struct shared *s = arg;
	CURL *c = curl_easy_init();
	if (!c)
		return NULL;
	struct curl_slist *h = NULL;
	h = curl_slist_append(h, s->auth);
	h = curl_slist_append(h, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, s->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CAINFO, s->ca);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	double end = now_s() + s->seconds;
	while (now_s() < end) {
		if (s->nbodies) {
			size_t i = atomic_fetch_add(&s->next, 1);
			if (s->cycle)
				i %= s->nbodies;
			else if (i >= s->nbodies) /* a release token works once: never reuse */
				break;
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, s->bodies[i]);
		}
		long code = 0;
		CURLcode rc = curl_easy_perform(c);
		if (rc == CURLE_OK)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
		atomic_fetch_add(&s->requests, 1);
		if (code != 200)
			atomic_fetch_add(&s->errors, 1);
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return NULL;
}

static char *read_line_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);
	fclose(f);
	if (n <= 0) {
		free(line);
		return NULL;
	}
	line[strcspn(line, "\r\n")] = '\0';
	return line;
}

static int read_bodies(const char *path, struct shared *s)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t cap = 0;
	char *line = NULL;
	size_t lcap = 0;
	ssize_t n;
	while ((n = getline(&line, &lcap, f)) > 0) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0])
			continue;
		if (s->nbodies == cap) {
			cap = cap ? cap * 2 : 1024;
			char **nb = realloc(s->bodies, cap * sizeof(*nb));
			if (!nb)
				break;
			s->bodies = nb;
		}
		s->bodies[s->nbodies++] = strdup(line);
	}
	free(line);
	fclose(f);
	return s->nbodies ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s URL BODIES_FILE|- TOKEN_FILE CA_FILE THREADS SECONDS\n",
			argv[0]);
		return 2;
	}
	struct shared s = { .url = argv[1], .ca = argv[4], .seconds = atof(argv[6]) };
	int threads = atoi(argv[5]);
	if (threads < 1 || threads > 256 || s.seconds <= 0) {
		fprintf(stderr, "bad THREADS or SECONDS\n");
		return 2;
	}
	const char *bodies = argv[2];
	if (!strncmp(bodies, "cycle:", 6)) {
		s.cycle = true;
		bodies += 6;
	}
	if (strcmp(bodies, "-") && read_bodies(bodies, &s) < 0) {
		fprintf(stderr, "cannot read bodies from %s\n", argv[2]);
		return 1;
	}
	char *tok = read_line_file(argv[3]);
	if (!tok) {
		fprintf(stderr, "cannot read token from %s\n", argv[3]);
		return 1;
	}
	size_t alen = strlen(tok) + 32;
	char *auth = malloc(alen);
	if (!auth)
		return 1;
	snprintf(auth, alen, "Authorization: Bearer %s", tok);
	s.auth = auth;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	pthread_t *t = calloc((size_t)threads, sizeof(*t));
	if (!t)
		return 1;
	double start = now_s();
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, worker, &s);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	double el = now_s() - start;
	long req = atomic_load(&s.requests), errs = atomic_load(&s.errors);
	printf("requests=%ld errors=%ld seconds=%.2f rps=%.1f\n", req, errs, el,
	       (double)(req - errs) / el);
	for (size_t i = 0; i < s.nbodies; i++)
		free(s.bodies[i]);
	free(s.bodies);
	free(t);
	free(auth);
	free(tok);
	curl_global_cleanup();
	return errs ? 1 : 0;
}
