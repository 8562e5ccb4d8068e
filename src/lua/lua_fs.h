/* lua_fs.h - mr.fs (lua_fs.c), and what sock:send_file needs of it. */
#ifndef MR_LUA_FS_H
#define MR_LUA_FS_H

#include "fs.h"
#include "lua_int.h"

/* Add `fs` to the moonring module, the table on top. */
void lua_fs_register(lua_State *L, struct lua_host *h);
/* Is the value at idx a file of mr.fs.open? */
bool lua_fs_is_file(lua_State *L, int idx);
/* Its core file, NULL once closed (or when it is no file). */
struct fs_file *lua_fs_file_at(lua_State *L, int idx);
/* The path at idx: a string without NUL bytes (the kernel would end it
 * at the first), else it raises. */
const char *lua_fs_check_path(lua_State *L, int idx);

#endif
