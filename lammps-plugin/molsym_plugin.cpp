/* Entry point of molsymplugin.so: registers pair_style molsym with LAMMPS (`plugin load`). */
#include "lammpsplugin.h"
#include "pair_molsym.h"

#include "lammps.h"

using namespace LAMMPS_NS;

static Pair *create_pair_molsym(LAMMPS *lmp)
{
  return new PairMolsym(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  // built against the headers of the LAMMPS that loads it (`make lammps`): the host's version
  plugin.version = static_cast<LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "molsym";
  plugin.info = "molsym machine-learned potential (TorchScript export, message passing over ghost atoms)";
  plugin.author = "molsym";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &create_pair_molsym;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
