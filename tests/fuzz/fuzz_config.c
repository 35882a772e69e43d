/* libFuzzer target: the JSON config reader, key=value overrides, validation and the
 * saved-config round trip. The input is a JSON text; after a NUL byte, each further
 * NUL-separated piece is applied as an override. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    Config c;
    char err[512];
    config_defaults(&c);
    config_load_json(&c, text, "fuzz.json", err, sizeof err);
    for (size_t at = strlen(text) + 1; at < size; at += strlen(text + at) + 1)
        config_set(&c, text + at, err, sizeof err);
    if (config_validate(&c, err, sizeof err) == 0) {
        /* A valid config must survive its own save and load unchanged. */
        char *saved = config_to_json(&c);
        Config again;
        config_defaults(&again);
        if (config_load_json(&again, saved, "saved", err, sizeof err) != 0) __builtin_trap();
        char *resaved = config_to_json(&again);
        if (strcmp(saved, resaved) != 0) __builtin_trap();
        free(saved);
        free(resaved);
    }
    free(text);
    return 0;
}
