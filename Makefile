# lpnx: a Lua 5.4 extension module (lpnx.core) plus Lua modules.
#
#   make            install missing Debian packages, build build/lpnx/core.so
#   make test       run every busted spec
#   make demo       the main job, end to end
#   make lint       luacheck over the Lua, cppcheck over the C
#   make env        shell exports to use the in-tree build: eval "$(make -s env)"
#   make repl       lua5.4 with lpnx loaded
#   make ASAN=1 ... the same with AddressSanitizer + UBSan, in build-asan/
#   make install    (used by luarocks) INST_LIBDIR=... INST_LUADIR=...

TOP := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))

CC ?= gcc
CXX ?= g++
LUA ?= lua5.4
LUA_INC ?= /usr/include/lua5.4
OPENBLAS_DIR ?= /usr/lib/x86_64-linux-gnu/openblas-openmp
OPENBLAS_INC ?= /usr/include/x86_64-linux-gnu/openblas-openmp

# Debian packages the build, the specs and the examples need.
DEPS_PKGS := gcc g++ make lua5.4 liblua5.4-dev libopenblas-openmp-dev libpng-dev libjansson-dev libzip-dev libprotobuf-c-dev protobuf-c-compiler libopenjp2-7-dev libturbojpeg0-dev nettle-dev \
             libdcmtk-dev dcmtk lua-busted lua-argparse lua-cjson lua-filesystem lua-check cppcheck gnuplot-nox \
             clang libclang-rt-14-dev openmpi-bin libopenmpi-dev dicom3tools bc chromium \
             orthanc curl python3-onnx python3-opencv

ifeq ($(ASAN),1)
BUILD := $(TOP)/build-asan
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SAN_LDFLAGS := -fsanitize=address,undefined
else
BUILD := $(TOP)/build
OPT := -O2 -march=x86-64-v2 -g
SAN_LDFLAGS :=
endif

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wno-unknown-pragmas
CPPFLAGS_ALL := -I$(LUA_INC) -I$(OPENBLAS_INC) -D_POSIX_C_SOURCE=200809L -MMD -MP
CFLAGS_ALL := -std=c99 $(OPT) -fPIC -fopenmp $(WARN) $(CFLAGS)
CXXFLAGS_ALL := -std=c++17 $(OPT) -fPIC -fopenmp -Wall -Wextra -Wno-unknown-pragmas $(CXXFLAGS)
LIBS := -L$(OPENBLAS_DIR) -Wl,-rpath,$(OPENBLAS_DIR) -lopenblas -lpng16 -ljansson -lnettle -lzip -lprotobuf-c -lm
DCMTK_LIBS := -lopenjp2 -lturbojpeg -ldcmsr -ldcmseg -ldcmfg -ldcmiod -ldcmjpls -ldcmjpeg -ldcmimage -ldcmimgle -ldcmnet -ldcmdata -loflog -lofstd

C_SRC := $(wildcard lpnx/*.c lpnx/ops/*.c lpnx/image/*.c lpnx/io/*.c lpnx/bind/*.c)
CXX_SRC := $(wildcard lpnx/io/*.cpp)
OBJ := $(C_SRC:%.c=$(BUILD)/obj/%.o) $(CXX_SRC:%.cpp=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/onnx.pb-c.o

# ONNX's schema, as the onnx package installs it (python3-onnx); protoc-c
# turns it into the C messages lpnx/io/onnx.c fills.
ONNX_PROTO ?= $(firstword $(wildcard /usr/lib/python3/dist-packages/onnx/onnx.proto /usr/include/onnx/onnx.proto) \
                          /usr/lib/python3/dist-packages/onnx/onnx.proto)
LIB := $(BUILD)/lpnx/core.so
LINK := $(if $(CXX_SRC),$(CXX),$(CC))
LINK_LIBS := $(LIBS) $(if $(CXX_SRC),$(DCMTK_LIBS))

# lpnx.ref (lpnx/ref/): the oracles the specs hold the kernels to, a module
# of its own so that lpnx.core carries none of them. It hands lpnx.core a
# table of the oracles (ref/ref_table.h); the generator's draws (ops/random.c)
# are the one kernel file it shares.
REF_SRC := $(wildcard lpnx/ref/*.c) lpnx/ops/random.c
REF_OBJ := $(REF_SRC:%.c=$(BUILD)/obj/%.o)
REF_MOD := $(BUILD)/lpnx/ref.so

# lpnx.mpi (lpnx/dist/): data-parallel collectives, built where Open MPI is
# installed (make deps installs it), as a module of its own so that
# lpnx.core never needs MPI.
MPICC := $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPICC),)
MPI_CFLAGS := $(shell $(MPICC) --showme:compile)
MPI_LIBS := $(shell $(MPICC) --showme:link)
MPI_SRC := $(wildcard lpnx/dist/*.c)
MPI_OBJ := $(MPI_SRC:%.c=$(BUILD)/obj/%.o)
MPI_MOD := $(BUILD)/lpnx/mpi.so
endif

LUA_PATH_IN := $(TOP)/lua/?.lua;$(TOP)/lua/?/init.lua;;
LUA_CPATH_IN := $(BUILD)/?.so;;
ASAN_RT = $(shell $(CC) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libstdc++.so)
RUN_ENV = LUA_PATH='$(LUA_PATH_IN)' LUA_CPATH='$(LUA_CPATH_IN)' \
          $(if $(filter 1,$(ASAN)),LD_PRELOAD='$(ASAN_RT)' ASAN_OPTIONS='$(ASAN_OPTS)' UBSAN_OPTIONS='$(UBSAN_OPTS)')
# intercept_tls_get_addr=0: with it on, LeakSanitizer (GCC 12's libasan) can
# record a dynamic-TLS block of a dlopen'ed library with a bogus range
# ("DTLS 4 at 0x16f1-0x8000027f3") and its tracer then dies at exit on
# "Tracer caught signal 11" while scanning it, after every spec passed.
ASAN_OPTS := detect_leaks=1:allocator_may_return_null=1:strict_string_checks=1:intercept_tls_get_addr=0
UBSAN_OPTS := halt_on_error=1:print_stacktrace=1
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all build deps test demo lint env repl install clean bench fuzz fuzz-run

all: deps build

build: $(LIB) $(REF_MOD) $(MPI_MOD)

$(LIB): $(OBJ)
	@mkdir -p $(dir $@)
	$(LINK) -shared -Wl,-z,nodelete -o $@ $(OBJ) $(SAN_LDFLAGS) -fopenmp $(LINK_LIBS)

$(REF_MOD): $(REF_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-z,nodelete -o $@ $(REF_OBJ) $(SAN_LDFLAGS) -fopenmp -lm

$(MPI_MOD): $(MPI_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-z,nodelete -o $@ $(MPI_OBJ) $(SAN_LDFLAGS) $(MPI_LIBS)

$(BUILD)/obj/lpnx/dist/%.o: lpnx/dist/%.c | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(MPI_CFLAGS) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/gen/onnx.pb-c.c $(BUILD)/gen/onnx.pb-c.h: $(ONNX_PROTO) | $(BUILD)/.deps-ok
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -I$(dir $(ONNX_PROTO)) $(ONNX_PROTO)

$(BUILD)/obj/gen/onnx.pb-c.o: $(BUILD)/gen/onnx.pb-c.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) -I$(BUILD)/gen -std=c99 $(OPT) -fPIC $(CFLAGS) -c $< -o $@

$(BUILD)/obj/lpnx/io/onnx.o: lpnx/io/onnx.c $(BUILD)/gen/onnx.pb-c.h | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS_ALL) -isystem $(BUILD)/gen $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj/%.o: %.cpp | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS_ALL) $(CXXFLAGS_ALL) -c $< -o $@

# Headers must exist before the first compile; `make deps` checks every time.
$(BUILD)/.deps-ok:
	@$(MAKE) --no-print-directory deps
	@mkdir -p $(BUILD) && touch $@

-include $(OBJ:.o=.d) $(REF_OBJ:.o=.d) $(MPI_OBJ:.o=.d)
$(OBJ) $(REF_OBJ) $(MPI_OBJ): $(TOP)/Makefile

# Installs the Debian packages that are missing; does nothing when all are there.
deps:
	@missing=""; \
	for p in $(DEPS_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

BUSTED = $(LUA) $(shell command -v busted || echo /usr/bin/busted)

test: deps build
	cd $(TOP) && $(RUN_ENV) $(BUSTED) $(BUSTED_ARGS) spec

# The main job on synthetic SIIM-ACR data: write the harder (siim preset)
# data set in 2 processes (kept between runs), train, predict the 224
# held-out images (49 with a pneumothorax), print the evaluation report.
# About 10 minutes on 2 cores (1.5 fewer once the data set is written); the
# settings trade model size and resolution for that time.
DEMO_DATA_ARGS := --count 660 --seed 7 --preset siim --size 1024 --test-fraction 0.34
# The data set is kept between runs while its arguments and the phantom's
# code (lua/lpnx/synth.lua) stay the same.
DEMO_DATA_STAMP = $(DEMO_DATA_ARGS) synth $(shell cd $(TOP) && sha256sum lua/lpnx/synth.lua | cut -c1-16)
DEMO_TRAIN_ARGS := --size 256 --encoder resnet18 --encoder-width 16 --decoder-channels 64,32,16,16,8 \
                   --epochs 20 --batch 8 --lr 2e-3 --positive-fraction 0.7,0.4 --conv-algorithm winograd \
                   --workers 1 --seed 1
demo: deps build
	@cd $(TOP) && if [ "$$(cat demo/data/.made-with 2>/dev/null)" != "$(DEMO_DATA_STAMP)" ]; then \
	  rm -rf demo/data && echo "== writing a synthetic SIIM-ACR data set to demo/data" && \
	  $(RUN_ENV) $(LUA) examples/make_synthetic.lua --out demo/data $(DEMO_DATA_ARGS) --workers 2 && \
	  echo "$(DEMO_DATA_STAMP)" > demo/data/.made-with; \
	else echo "== using the synthetic data set in demo/data"; fi
	@cd $(TOP) && rm -rf demo/run demo/pred && echo "== training into demo/run" && \
	  $(RUN_ENV) $(LUA) examples/train.lua --data demo/data --out demo/run $(DEMO_TRAIN_ARGS)
	@cd $(TOP) && echo "== predicting the held-out images into demo/pred" && \
	  $(RUN_ENV) $(LUA) examples/predict.lua --model demo/run/best.safetensors \
	    --data demo/data/dicom-images-test --out demo/pred --tta \
	    --dicom-seg --report --truth demo/data/test-rle.csv
	@cd $(TOP) && echo "== scoring demo/pred against demo/data/test-rle.csv" && \
	  $(RUN_ENV) $(LUA) examples/evaluate.lua --pred demo/pred/submission.csv --truth demo/data/test-rle.csv \
	    --json demo/pred/evaluation.json --plots demo/pred/figures

lint: deps
	cd $(TOP) && luacheck -q lua examples spec
	cd $(TOP) && cppcheck -q --std=c99 --enable=warning,performance,portability --error-exitcode=1 \
	  --inline-suppr -D_OPENMP -I lpnx lpnx

# libFuzzer targets, one per parser lpnx owns or wraps, with ASan + UBSan.
# make fuzz builds them; make fuzz-run FUZZ_SECONDS=N runs each for N
# seconds from its committed seed corpus (lpnx/fuzz/corpus/TARGET), keeping
# what it learns in build-fuzz/corpus/ and crashing inputs as build-fuzz/crash-*.
# fuzz_j2k feeds OpenJPEG codestreams straight (j2k.c); fuzz_dicom reaches
# the same code, and libjpeg-turbo's, through whole files. fuzz_torch feeds
# whole checkpoints (zip and legacy) to torch_ckpt.c. Fuzz builds
# decode JPEG 2000 frames of at most 2^24 values, to stay fast.
FUZZ_TARGETS := safetensors png rle csv j2k pickle torch dicom dicom_seg
FUZZ_BUILD := $(TOP)/build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -D_POSIX_C_SOURCE=200809L -I$(TOP)/lpnx -DLPNX_J2K_MAX_VALUES=16777216.0
FUZZ_SRC_safetensors := lpnx/io/safetensors.c lpnx/io/file.c
FUZZ_SRC_png := lpnx/io/png.c lpnx/io/file.c
FUZZ_SRC_rle := lpnx/io/rle.c
FUZZ_SRC_csv := lpnx/io/csv.c
FUZZ_SRC_j2k := lpnx/io/j2k.c
FUZZ_SRC_pickle := lpnx/io/pickle.c
FUZZ_SRC_torch := lpnx/io/torch_ckpt.c lpnx/io/pickle.c lpnx/io/safetensors.c lpnx/io/file.c
FUZZ_LIBS_png := -lpng16
FUZZ_LIBS_safetensors := -ljansson
FUZZ_LIBS_j2k := -lopenjp2
FUZZ_LIBS_torch := -lzip -ljansson
FUZZ_DICOM_C := lpnx/io/file.c lpnx/io/j2k.c lpnx/io/jpeg_turbo.c
FUZZ_BINS := $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))
fuzz: deps $(FUZZ_BINS)
	@echo "fuzz targets in $(FUZZ_BUILD): $(notdir $(FUZZ_BINS))"
define FUZZ_C_RULE
$(FUZZ_BUILD)/fuzz_$(1): lpnx/fuzz/fuzz_$(1).c $(FUZZ_SRC_$(1)) | $(BUILD)/.deps-ok
	@mkdir -p $(FUZZ_BUILD)
	clang -std=c99 $(FUZZ_FLAGS) $$(filter %.c,$$^) $(FUZZ_LIBS_$(1)) -o $$@
endef
$(foreach t,safetensors png rle csv j2k pickle torch,$(eval $(call FUZZ_C_RULE,$(t))))
$(FUZZ_BUILD)/fuzz_dicom: lpnx/fuzz/fuzz_dicom.cpp lpnx/io/dicom.cpp lpnx/io/dcm_util.cpp lpnx/io/dcm_util.hpp \
  $(FUZZ_DICOM_C) $(FUZZ_DICOM_C:.c=.h) | $(BUILD)/.deps-ok
	@mkdir -p $(FUZZ_BUILD)/dicom-obj
	for c in $(FUZZ_DICOM_C); do clang -std=c99 $(FUZZ_FLAGS) -c $$c -o $(FUZZ_BUILD)/dicom-obj/$$(basename $$c .c).o || exit 1; done
	clang++ -std=c++17 $(FUZZ_FLAGS) lpnx/fuzz/fuzz_dicom.cpp lpnx/io/dicom.cpp lpnx/io/dcm_util.cpp \
	  $(addprefix $(FUZZ_BUILD)/dicom-obj/,$(notdir $(FUZZ_DICOM_C:.c=.o))) $(DCMTK_LIBS) -o $@
$(FUZZ_BUILD)/fuzz_dicom_seg: lpnx/fuzz/fuzz_dicom_seg.cpp lpnx/io/dicom_seg.cpp lpnx/io/dcm_util.cpp \
  lpnx/io/dcm_util.hpp lpnx/io/file.c | $(BUILD)/.deps-ok
	@mkdir -p $(FUZZ_BUILD)
	clang -std=c99 $(FUZZ_FLAGS) -c lpnx/io/file.c -o $(FUZZ_BUILD)/file-dicom_seg.o
	clang++ -std=c++17 $(FUZZ_FLAGS) lpnx/fuzz/fuzz_dicom_seg.cpp lpnx/io/dicom_seg.cpp lpnx/io/dcm_util.cpp \
	  $(FUZZ_BUILD)/file-dicom_seg.o $(DCMTK_LIBS) -o $@
fuzz-run: fuzz
	@cd $(TOP) && for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t && cp -n lpnx/fuzz/corpus/$$t/* $(FUZZ_BUILD)/corpus/$$t/ 2>/dev/null; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS)s"; \
	  $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_BUILD)/corpus/$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=20 \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- -print_final_stats=1 2>&1 | \
	    grep -E "^(stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)" ; \
	  if ls $(FUZZ_BUILD)/crash-$$t-* >/dev/null 2>&1; then echo "fuzz_$$t found crashes: $(FUZZ_BUILD)/crash-$$t-*"; exit 1; fi; \
	done

# Times lpnx and, where Debian's python3-torch is installed, the same model in
# PyTorch (shared/reference/torch_unet.py beside the project), side by side.
BENCH_ARGS ?= --encoder resnet34 --size 256 --batch 4 --threads 2
TORCH_REF ?= $(TOP)/../shared/reference/torch_unet.py
bench: deps build
	@cd $(TOP) && $(RUN_ENV) $(LUA) examples/bench.lua $(BENCH_ARGS) $(BENCH_EXTRA) | tee build/bench-lpnx.txt
	@cd $(TOP) && if /usr/bin/python3 -c 'import torch' 2>/dev/null && [ -f $(TORCH_REF) ]; then \
	  set -- $$(echo "$(BENCH_ARGS)" | sed -E 's/--(encoder|size|batch|threads) //g; s/resnet//'); \
	  /usr/bin/time -f 'torch_peak_rss_mb=%M' /usr/bin/python3 $(TORCH_REF) $$2 $$3 $$4 $$1 \
	    > build/bench-torch.txt 2> build/bench-torch-time.txt; \
	  cat build/bench-torch.txt; \
	  $(LUA) examples/bench_compare.lua build/bench-lpnx.txt build/bench-torch.txt build/bench-torch-time.txt; \
	else echo "python3-torch is not installed: no PyTorch side (apt-get install python3-torch)"; fi

env:
	@echo "export LUA_PATH='$(LUA_PATH_IN)'"
	@echo "export LUA_CPATH='$(LUA_CPATH_IN)'"
ifeq ($(ASAN),1)
	@echo "export LD_PRELOAD='$(ASAN_RT)'"
	@echo "export ASAN_OPTIONS='$(ASAN_OPTS)'"
	@echo "export UBSAN_OPTIONS='$(UBSAN_OPTS)'"
endif

repl: deps build
	@$(RUN_ENV) $(LUA) -i -e 'lpnx = require "lpnx"; print("lpnx " .. lpnx.version .. " loaded as lpnx")'

INST_LIBDIR ?= /usr/local/lib/lua/5.4
INST_LUADIR ?= /usr/local/share/lua/5.4
install: build
	mkdir -p $(INST_LIBDIR)/lpnx $(INST_LUADIR)
	cp $(LIB) $(INST_LIBDIR)/lpnx/core.so
	cp $(REF_MOD) $(INST_LIBDIR)/lpnx/ref.so
	$(if $(MPI_MOD),cp $(MPI_MOD) $(INST_LIBDIR)/lpnx/mpi.so)
	cp -r lua/lpnx $(INST_LUADIR)/

clean:
	rm -rf $(TOP)/build $(TOP)/build-asan $(TOP)/build-fuzz
