// Empty: the precompiled headers of the fuzz build hang off this library (CMakeLists.txt).
