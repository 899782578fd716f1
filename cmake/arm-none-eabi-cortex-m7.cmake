# CMake toolchain file for a Cortex-M7 with the double-precision FPU
# (STM32H7/F7 class) and Debian's arm-none-eabi-gcc with newlib-nano:
#   cmake -S app -B build -DCMAKE_TOOLCHAIN_FILE=path/to/tritlm/cmake/arm-none-eabi-cortex-m7.cmake
# A firmware project that already has its own toolchain file (STM32CubeMX,
# for instance) keeps it: add_subdirectory(tritlm) only needs the compiler
# flags for the core to pick its DSP kernels (__ARM_FEATURE_DSP).
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
# try_compile cannot link without the board's startup code and linker script
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(CMAKE_C_FLAGS_INIT "-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16 -ffunction-sections -fdata-sections")
set(CMAKE_EXE_LINKER_FLAGS_INIT "--specs=nano.specs --specs=nosys.specs -Wl,--gc-sections")
