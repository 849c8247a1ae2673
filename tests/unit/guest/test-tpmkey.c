/* SPDX-License-Identifier: Apache-2.0 */
/* The guest's ephemeral key in a real vTPM (swtpm, started here on loopback): a release
 * wrapped to its public half (CKM_RSA_AES_KEY_WRAP, _256, _384) opens inside the TPM; each key
 * is new; tampering and an unknown wrapping are refused. Skipped when swtpm is not installed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <opencvm/crypto.h>
#include <opencvm/guest.h>

struct fx {
	pid_t swtpm;
	char dir[64];
	char conf[96];
};

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return -1;
	close(fd);
	return ntohs(a.sin_port);
}

static int setup(void **state)
{
	if (system("command -v swtpm >/dev/null 2>&1") != 0)
		return 0; /* each test skips */
	struct fx *fx = calloc(1, sizeof(*fx));
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/cvm-swtpm-XXXXXX");
	if (!fx || !mkdtemp(fx->dir))
		return -1;
	/* the swtpm TCTI finds the control channel on the next port */
	int port = free_port(), ctrl = port + 1;
	if (port < 0)
		return -1;
	char server[64], ctl[64], st[96];
	snprintf(server, sizeof(server), "type=tcp,port=%d,bindaddr=127.0.0.1", port);
	snprintf(ctl, sizeof(ctl), "type=tcp,port=%d,bindaddr=127.0.0.1", ctrl);
	snprintf(st, sizeof(st), "dir=%s", fx->dir);
	snprintf(fx->conf, sizeof(fx->conf), "swtpm:host=127.0.0.1,port=%d", port);
	fx->swtpm = fork();
	if (fx->swtpm == 0) {
		execlp("swtpm", "swtpm", "socket", "--tpm2", "--server", server, "--ctrl", ctl,
		       "--tpmstate", st, "--flags", "not-need-init,startup-clear", (char *)NULL);
		_exit(127);
	}
	/* until it accepts connections */
	for (int i = 0; i < 100; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			break;
		usleep(50 * 1000);
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	if (!fx)
		return 0;
	kill(fx->swtpm, SIGTERM);
	waitpid(fx->swtpm, NULL, 0);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	if (system(cmd) != 0)
		return -1;
	free(fx);
	return 0;
}

static void test_release_opens_in_the_tpm(void **state)
{
	struct fx *fx = *state;
	if (!fx)
		skip();
	struct cvm_err err = { 0 };
	struct cvm_guest_tpm_key *k = NULL, *k2 = NULL;
	assert_int_equal(cvm_guest_tpm_key_create(fx->conf, &k, &err), 0);
	const struct cvm_key *pub = cvm_guest_tpm_key_public(k);
	assert_int_equal(cvm_key_bits(pub), 2048);
	uint8_t material[1218];
	assert_int_equal(cvm_random(material, sizeof(material), &err), 0);
	static const char *const encs[] = { "CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256",
					    "RSA_AES_KEY_WRAP_384" };
	for (size_t i = 0; i < 3; i++) {
		struct cvm_buf ct = { 0 };
		assert_int_equal(cvm_rsa_aes_key_wrap(cvm_key_pkey(pub), encs[i], material,
						      sizeof(material), &ct, &err), 0);
		struct cvm_secret *got = NULL;
		assert_int_equal(cvm_guest_tpm_key_unwrap(k, encs[i], ct.data, ct.len, &got, &err), 0);
		assert_int_equal(got->len, sizeof(material));
		assert_memory_equal(got->data, material, sizeof(material));
		cvm_secret_free(got);
		/* another hash than the one it was wrapped with, a flipped bit: refused */
		assert_int_not_equal(cvm_guest_tpm_key_unwrap(k, encs[(i + 1) % 3], ct.data, ct.len,
							      &got, &err), 0);
		ct.data[ct.len - 1] ^= 1;
		assert_int_not_equal(cvm_guest_tpm_key_unwrap(k, encs[i], ct.data, ct.len, &got,
							      &err), 0);
		assert_null(got);
		cvm_buf_free(&ct);
	}
	struct cvm_secret *none = NULL;
	assert_int_equal(cvm_guest_tpm_key_unwrap(k, "RSA-OAEP", material, 300, &none, &err),
			 -ENOTSUP);
	/* the owner seed persists, the key does not: a second key differs */
	assert_int_equal(cvm_guest_tpm_key_create(fx->conf, &k2, &err), 0);
	char *t1 = NULL, *t2 = NULL;
	assert_int_equal(cvm_key_thumbprint(pub, &t1, &err), 0);
	assert_int_equal(cvm_key_thumbprint(cvm_guest_tpm_key_public(k2), &t2, &err), 0);
	assert_string_not_equal(t1, t2);
	free(t1);
	free(t2);
	cvm_guest_tpm_key_free(k2);
	cvm_guest_tpm_key_free(k);
}

static void test_no_tpm(void **state)
{
	(void)state;
	struct cvm_err err = { 0 };
	struct cvm_guest_tpm_key *k = NULL;
	assert_int_not_equal(cvm_guest_tpm_key_create("device:/nonexistent/tpmrm0", &k, &err), 0);
	assert_null(k);
	assert_non_null(strstr(err.msg, "vTPM"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_release_opens_in_the_tpm, setup, teardown),
		cmocka_unit_test(test_no_tpm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
