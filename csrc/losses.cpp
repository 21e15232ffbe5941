#include "losses.hpp"
