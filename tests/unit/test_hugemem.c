/* test_hugemem.c - 2 MiB-aligned memory, collapsed shared memory, weights placed in memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#include "testutil.h"

#include "hugemem.h"
#include "model.h"

static void test_alloc_aligned_zeroed_writable(void **state)
{
    (void)state;
    llorch_error err = {0};
    const size_t n = 3 * HUGEMEM_PAGE + 1;
    uint8_t *p = hugemem_alloc(n, &err);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % HUGEMEM_PAGE, 0);
    for (size_t i = 0; i < n; i += 4096)
        assert_int_equal(p[i], 0);
    memset(p, 0x5a, n);
    assert_int_equal(p[n - 1], 0x5a);
    assert_true(hugemem_mapped_huge(p, n) >= 0);
    hugemem_unmap(p, n);
    assert_true(hugemem_available() > (long long)n); /* /proc/meminfo on Linux */
}

static void test_alloc_zero_bytes_is_an_error(void **state)
{
    (void)state;
    llorch_error err = {0};
    assert_null(hugemem_alloc(0, &err));
    assert_non_null(strstr(err.msg, "zero"));
}

static void test_map_bad_fd_fails(void **state)
{
    (void)state;
    errno = 0;
    assert_null(hugemem_map(-1, 4096, PROT_READ));
    assert_int_not_equal(errno, 0);
    assert_null(hugemem_map(0, 0, PROT_READ));
}

/* A segment written with write(2), as the loader does, mapped read-only, collapsed:
 * every byte is what was written, before and after. */
static void test_collapse_keeps_the_data(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "/llorch-test-huge-%ld", (long)getpid());
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    assert_true(fd >= 0);
    shm_unlink(name);
    const size_t n = 4 * HUGEMEM_PAGE + 8192;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 12));
    assert_int_equal(pwrite(fd, buf, n, 0), (ssize_t)n);
    uint8_t *p = hugemem_map(fd, n, PROT_READ);
    close(fd);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % HUGEMEM_PAGE, 0);
    assert_memory_equal(p, buf, n);
    const size_t huge = hugemem_collapse(p, n);
    assert_true(huge <= 4 * HUGEMEM_PAGE); /* the 8 KiB tail is never collapsed */
    assert_int_equal(huge % HUGEMEM_PAGE, 0);
    assert_memory_equal(p, buf, n);
    if (huge > 0)
        assert_true(hugemem_mapped_huge(p, n) >= (long long)huge);
    hugemem_unmap(p, n);
    free(buf);
}

/* Every tensor placed byte for byte; the file's records still point into the file. */
static void test_place_weights_copies_every_tensor(void **state)
{
    (void)state;
    llorch_error err = {0};
    model *m = model_open(test_shared_path("models/stories260K.gguf"), &err);
    assert_non_null(m);
    const gguf_tensor *file_tensors = m->file->tensors;
    assert_ptr_equal(m->tensors, file_tensors);
    assert_int_equal(model_place_weights(m, &err), 0);
    assert_ptr_not_equal(m->tensors, file_tensors);
    assert_int_equal(model_place_weights(m, &err), 0); /* twice: nothing more happens */
    for (size_t i = 0; i < m->n_tensors; i++) {
        assert_string_equal(m->tensors[i].name, file_tensors[i].name);
        assert_int_equal(m->tensors[i].n_bytes, file_tensors[i].n_bytes);
        assert_ptr_not_equal(m->tensors[i].data, file_tensors[i].data);
        assert_int_equal((uintptr_t)m->tensors[i].data % 64, 0);
        assert_memory_equal(m->tensors[i].data, file_tensors[i].data, m->tensors[i].n_bytes);
    }
    model_free(&m);
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_aligned_zeroed_writable),
        cmocka_unit_test(test_alloc_zero_bytes_is_an_error),
        cmocka_unit_test(test_map_bad_fd_fails),
        cmocka_unit_test(test_collapse_keeps_the_data),
        cmocka_unit_test(test_place_weights_copies_every_tensor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
