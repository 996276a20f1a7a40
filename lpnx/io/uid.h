/* Deterministic DICOM UIDs derived from names.
 *
 * A result object (a segmentation, a report, an overlay) made twice from
 * the same source must carry the same UIDs, so that the archive that gets
 * it twice keeps one object. lpnx_derive_uid turns any list of byte
 * strings into such a UID: "2.25." followed by the decimal value of a
 * UUID (PS3.5 B.2, ITU-T X.667) whose bits are the first 16 bytes of the
 * SHA-256 digest of the strings, each written as its decimal length, a
 * colon and its bytes ("2:ab1:c" for "ab", "c", so that ("ab", "c") and
 * ("a", "bc") differ), with the version field set to 8 and the variant to
 * RFC 9562's (the name-based SHA-256 layout of RFC 9562, appendix B.2).
 * The UUID keeps 122 bits of the digest.
 *
 * Plain C99 over nettle's SHA-256; no Lua, no global state. */
#ifndef LPNX_IO_UID_H
#define LPNX_IO_UID_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest derived UID plus its NUL: "2.25." and at most 39 digits. */
#define LPNX_UID_MAX 65

/* Writes the UID of the n strings parts[i] (lens[i] bytes each, zero
 * bytes allowed) into out (LPNX_UID_MAX bytes). n may be 0 (the digest of
 * nothing); the binding refuses that. Cannot fail. */
void lpnx_derive_uid(char out[LPNX_UID_MAX], const char *const *parts, const size_t *lens, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_UID_H */
