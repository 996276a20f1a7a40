/* JPEG 2000 frames (a J2K codestream or a JP2 file) through OpenJPEG,
 * decoded from memory into the words an uncompressed DICOM frame would
 * hold. Plain C, no Lua, no DCMTK: the DICOM reader (dicom.cpp) hands in
 * one frame's bytes and what the data set declares; nothing here prints,
 * aborts or exits, and a failure leaves a reason in err.
 *
 * The declared image must match the codestream: rows, columns and samples
 * exactly, every component at full resolution, and the codestream's
 * precision at most BitsAllocated. A precision above BitsStored (a 16-bit
 * codestream in a file declaring 14 bits, as pydicom's 693_J2KI.dcm) is
 * taken when every decoded value fits BitsStored (PixelRepresentation
 * deciding the range), so no stored bit is lost; else it is an error. Signedness: the
 * codestream's samples are the stored bits (negative ones as two's
 * complement), and PixelRepresentation says how they are read, as for
 * uncompressed data. A file whose codestream is unsigned while it declares
 * PixelRepresentation 1 therefore reads as pydicom 2.3 reads it (its
 * J2K_pixelrep_mismatch.dcm gives -2000..1896 in both). */
#ifndef LPNX_IO_J2K_H
#define LPNX_IO_J2K_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest rows x columns x samples of one frame that is decoded (OpenJPEG
 * keeps 4 bytes a sample while it works): 2^28, 1 GiB of work memory. */
#ifndef LPNX_J2K_MAX_VALUES
#define LPNX_J2K_MAX_VALUES 268435456.0
#endif

/* What the data set declares for the frame. */
typedef struct {
    int rows, columns, samples; /* samples 1 or 3 */
    int bits_allocated;         /* 8 or 16: out holds bytes or host-order uint16 */
    int bits_stored;
    int pixel_representation;   /* 0 unsigned, 1 two's complement */
} lpnx_j2k_want;

/* What the codestream holds (filled as far as it was read). */
typedef struct {
    int rows, columns, components;
    int precision; /* of the first component */
    int is_signed;
    int jp2;       /* 1 for a JP2 box file, 0 for a bare codestream */
} lpnx_j2k_got;

/* Decodes data[0..n) into out: rows x columns pixels of `samples`
 * interleaved samples (as PlanarConfiguration 0), each a byte when
 * bits_allocated is 8, else a uint16. A colour codestream with a
 * multiple component transform comes out as RGB (OpenJPEG undoes it).
 * Returns 0, or -1 with the reason in err ("the JPEG 2000 codestream is
 * 64 x 64 with 1 component; the data set declares 30 rows x 41 columns x
 * 1 sample"). got may be NULL. With out NULL only the header is read and
 * checked (the size limit too), so that the caller allocates out only for
 * a codestream that declares what the data set does. */
int lpnx_j2k_decode(void *out, const unsigned char *data, size_t n, const lpnx_j2k_want *want,
                    lpnx_j2k_got *got, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* LPNX_IO_J2K_H */
