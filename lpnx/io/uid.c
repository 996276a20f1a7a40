/* UIDs derived from names (uid.h): SHA-256 through nettle, then the
 * 128-bit UUID written in decimal by long division. */
#include "uid.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <nettle/sha2.h>

void lpnx_derive_uid(char out[LPNX_UID_MAX], const char *const *parts, const size_t *lens, size_t n) {
    struct sha256_ctx ctx;
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_init(&ctx);
    for (size_t i = 0; i < n; i++) {
        char prefix[32]; /* "<length>:" */
        int k = snprintf(prefix, sizeof prefix, "%zu:", lens[i]);
        sha256_update(&ctx, (size_t)k, (const uint8_t *)prefix);
        if (lens[i]) sha256_update(&ctx, lens[i], (const uint8_t *)parts[i]);
    }
    sha256_digest(&ctx, sizeof digest, digest);

    /* the UUID: digest bytes 0..15, version 8 in the high nibble of byte 6,
     * variant 10 in the two high bits of byte 8 */
    uint8_t uuid[16]; /* big-endian */
    memcpy(uuid, digest, sizeof uuid);
    uuid[6] = (uint8_t)((uuid[6] & 0x0Fu) | 0x80u);
    uuid[8] = (uint8_t)((uuid[8] & 0x3Fu) | 0x80u);

    /* decimal digits, least significant first: divide the 128-bit number
     * by 10 until it is zero (it never is zero to begin with: byte 8 has
     * its top bit set) */
    char digits[40];
    int nd = 0;
    int zero = 0;
    while (!zero) {
        unsigned rem = 0;
        zero = 1;
        for (int b = 0; b < 16; b++) {
            unsigned cur = (rem << 8) | uuid[b];
            uuid[b] = (uint8_t)(cur / 10);
            rem = cur % 10;
            if (uuid[b]) zero = 0;
        }
        digits[nd++] = (char)('0' + rem);
    }
    memcpy(out, "2.25.", 5);
    for (int i = 0; i < nd; i++) out[5 + i] = digits[nd - 1 - i];
    out[5 + nd] = '\0';
}
