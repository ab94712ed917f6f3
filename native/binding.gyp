{
  "targets": [
    {
      "target_name": "xfer_native",
      "sources": ["fastcdc.c", "sys.c", "blake3_tree.c", "blake3/blake3_dispatch.c", "blake3/blake3_portable.c"],
      "cflags": ["-O3", "-std=c11", "-Wall", "-Wextra"],
      "xcode_settings": { "OTHER_CFLAGS": ["-O3"] },
      "msvs_settings": { "VCCLCompilerTool": { "Optimization": 2 } },
      "conditions": [
        # BLAKE3's SIMD kernels (vendored, unmodified: native/blake3/) as its assembly for
        # x86-64 Unix; elsewhere its portable C, which gives the same digests, slower.
        ["OS=='linux' and target_arch=='x64'", {
          "sources": [
            "blake3/blake3_sse2_x86-64_unix.S",
            "blake3/blake3_sse41_x86-64_unix.S",
            "blake3/blake3_avx2_x86-64_unix.S",
            "blake3/blake3_avx512_x86-64_unix.S"
          ]
        }, {
          "defines": ["BLAKE3_NO_SSE2", "BLAKE3_NO_SSE41", "BLAKE3_NO_AVX2", "BLAKE3_NO_AVX512", "BLAKE3_USE_NEON=0"]
        }]
      ]
    }
  ]
}
