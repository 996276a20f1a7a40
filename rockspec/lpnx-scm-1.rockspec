rockspec_format = "3.0"
package = "lpnx"
version = "scm-1"
source = {
  url = "git+file:///work/main",
}
description = {
  summary = "Pneumothorax segmentation on chest X-rays: tensors, a ResNet U-Net, DICOM/PNG/RLE I/O for Lua 5.4",
  detailed = [[
    A Lua 5.4 extension module in C: float32 tensors on OpenBLAS, the layers
    of a ResNet-encoder U-Net with their backward passes, segmentation
    losses, optimizers, and DICOM (DCMTK), PNG (libpng) and SIIM run-length
    I/O. Lua composes them into data pipelines, training and inference.
  ]],
}
dependencies = {
  "lua >= 5.4",
  "luafilesystem >= 1.8",
}
external_dependencies = {
  OPENBLAS = { header = "x86_64-linux-gnu/openblas-openmp/cblas.h", library = "openblas" },
  PNG = { header = "png.h", library = "png16" },
  JANSSON = { header = "jansson.h", library = "jansson" },
  DCMTK = { header = "dcmtk/dcmdata/dctk.h", library = "dcmdata" },
}
build = {
  type = "make",
  build_target = "build",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INC = "$(LUA_INCDIR)",
    LUA = "$(LUA)",
  },
  install_target = "install",
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
  },
}
